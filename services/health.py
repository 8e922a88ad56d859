"""Is a service's event loop alive? ``python -m services.health <service> [--max-age S] [--kill]``.

A container healthcheck (docker-compose.yml) for deployments without main.py's supervisor.
Each service writes a heartbeat file from its event loop once a second (services/heartbeat.py);
this command exits 0 when that file is fresh and 1, with a message, when it is missing (not
ready yet, or stopped), unreadable or older than ``--max-age``.

Docker marks an unhealthy container but never restarts it, so ``--kill`` also SIGKILLs a
stale writer: the container exits and its ``restart:`` policy starts it again. SIGKILL because
a stopped (SIGSTOP) process does not act on SIGTERM, and a stuck loop never gets to handle it.

The file protocol lives here, next to its reader, so that the healthcheck, which runs every few
seconds, imports nothing heavy (no numpy, no zmq).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MAX_AGE_S = 10.0
_FILE_PREFIX = "avatar-heartbeat-"


class HeartbeatFileError(RuntimeError):
    """The heartbeat file is missing or unreadable; the message says which."""


@dataclass(frozen=True, slots=True)
class HeartbeatRecord:
    service: str
    pid: int
    at: float  # time.time() of the last beat


def heartbeat_path(service: str, env: Mapping[str, str] | None = None) -> str:
    """``$AVATAR_RUN_DIR/avatar-heartbeat-<service>``, or in the temp folder without one.

    main.py gives each run its own AVATAR_RUN_DIR, so two avatars on one host never share
    a file; a container has its own /tmp.
    """
    env = os.environ if env is None else env
    folder = env.get("AVATAR_RUN_DIR") or tempfile.gettempdir()
    return os.path.join(folder, f"{_FILE_PREFIX}{service}")


def write_record(path: str, record: HeartbeatRecord) -> None:
    """Replace the file atomically: a reader sees the old beat or the new one, never half."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".beat-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"service": record.service, "pid": record.pid, "at": record.at}, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_record(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def read_record(path: str) -> HeartbeatRecord:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError as exc:
        raise HeartbeatFileError(f"no heartbeat file {path} (not ready yet, or stopped)") from exc
    except (OSError, ValueError) as exc:
        raise HeartbeatFileError(f"heartbeat file {path} is unreadable: {exc}") from exc
    if not (
        isinstance(data, dict)
        and isinstance(data.get("service"), str)
        and isinstance(data.get("pid"), int)
        and isinstance(data.get("at"), (int, float))
    ):
        raise HeartbeatFileError(f"heartbeat file {path} has no service, pid and time")
    return HeartbeatRecord(data["service"], data["pid"], float(data["at"]))


def _is_service_process(pid: int, service: str) -> bool:
    """Guards --kill against a reused pid: only ``python -m services.<service>`` is killed."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return f"services.{service}".encode() in argv


def check(service: str, max_age_s: float, kill: bool, env: Mapping[str, str] | None = None,
          now: float | None = None) -> tuple[bool, str]:
    """(healthy, what to print)."""
    path = heartbeat_path(service, env)
    try:
        record = read_record(path)
    except HeartbeatFileError as exc:
        return False, f"{service}: {exc}"
    age_s = (time.time() if now is None else now) - record.at
    if age_s <= max_age_s:
        return True, f"{service}: heartbeat {age_s:.1f} s ago (pid {record.pid})"
    message = f"{service}: no heartbeat for {age_s:.1f} s (limit {max_age_s:.1f} s; pid {record.pid})"
    if kill and _is_service_process(record.pid, service):
        try:
            os.kill(record.pid, signal.SIGKILL)
            message += ": killed it"
        except OSError as exc:
            message += f": could not kill it: {exc}"
    return False, message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.health",
        description="Exit 0 when the service's event loop has beaten recently, 1 otherwise.",
    )
    parser.add_argument("service", choices=("gateway", "asr", "llm", "tts", "lipsync"))
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_S, metavar="S",
                        help=f"oldest heartbeat that counts as alive, in seconds (default {DEFAULT_MAX_AGE_S:.0f})")
    parser.add_argument("--kill", action="store_true",
                        help="SIGKILL a stale service so the container's restart policy restarts it")
    args = parser.parse_args(argv)
    healthy, message = check(args.service, args.max_age, args.kill)
    print(message, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
