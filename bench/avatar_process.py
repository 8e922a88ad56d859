"""Start the real avatar (``python main.py``: five processes, real sockets) for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# Benchmarks load a server only on this machine: an avatar given by URL must be on loopback.
LOOPBACK_PREFIXES = ("http://127.0.0.1", "http://localhost", "http://[::1]")


def is_loopback_url(url: str) -> bool:
    return url.startswith(LOOPBACK_PREFIXES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_child(proc: subprocess.Popen, reader: threading.Thread, timeout_s: float) -> int:
    """Ctrl-C a child (it shuts down in phases), kill it if it overstays, and close its log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    reader.join(5)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


class AvatarProcess:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", "--port", str(self.port), *args],
            cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("Avatar ready"):
                self._ready.set()

    def wait_ready(self, timeout_s: float = 420) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(1):
            if self.proc.poll() is not None:
                raise RuntimeError("main.py exited early:\n" + self.log_tail())
            if time.monotonic() > deadline:
                raise TimeoutError("main.py not ready in time:\n" + self.log_tail())

    def wait_for_line(self, needle: str, timeout_s: float, start: int = 0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if needle in line:
                    return line
            time.sleep(0.2)
        raise TimeoutError(f"no log line with {needle!r}:\n" + self.log_tail())

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])

    def stop(self, timeout_s: float = 30) -> int:
        return stop_child(self.proc, self._reader, timeout_s)
