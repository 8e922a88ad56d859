"""The five services as separate processes without main.py's supervisor, so that one of them can
be left out and started later: the LLM, as compose starts the gateway while a large model loads.

Each service is ``python -m services.<name>`` on ipc sockets in a private folder, as main.py runs
them; readiness is each one's "<name> ready" log line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time

from bench.avatar_process import ROOT, free_port, stop_child
from services.endpoints import Endpoints
from services.supervisor import _die_with_parent

SERVICES = ("gateway", "asr", "llm", "tts", "lipsync")


class _Service:
    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=_die_with_parent,  # as main.py's supervisor does: no orphans if we are killed
        )
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"log-{name}")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if f"{self.name} ready (pid" in line:
                self.ready.set()

    def stop(self, timeout_s: float = 20.0) -> None:
        stop_child(self.proc, self._reader, timeout_s)


class ServiceStack:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._run_dir = tempfile.TemporaryDirectory(prefix="avatar-stack-")
        run_dir = self._run_dir.name
        self.env = {
            **os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            **Endpoints.in_dir(run_dir).to_env(),
            "AVATAR_RUN_DIR": run_dir, "AVATAR_SUPERVISOR": "", "AVATAR_HOST": "127.0.0.1",
            "AVATAR_PORT": str(self.port), "AVATAR_CONVERSATIONS_DB": ":memory:", **(env or {}),
        }
        self.services: dict[str, _Service] = {}

    def start(self, *names: str) -> None:
        for name in names:
            self.services[name] = _Service(name, self.env)

    def wait_ready(self, *names: str, timeout_s: float = 420.0) -> float:
        """Wait until each named service logged "ready"; the monotonic time the last one did."""
        deadline = time.monotonic() + timeout_s
        for name in names:
            service = self.services[name]
            while not service.ready.wait(0.5):
                if service.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n" + self.log_tail(name))
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready in {timeout_s:.0f} s:\n" + self.log_tail(name))
        return time.monotonic()

    def log_tail(self, name: str, n: int = 40) -> str:
        return "\n".join(self.services[name].lines[-n:])

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
        self._run_dir.cleanup()

    def __enter__(self) -> "ServiceStack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
