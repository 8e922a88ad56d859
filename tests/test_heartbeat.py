"""Hangs are detected: heartbeats from the event loop, the supervisor's watchdog, the health command.

The supervisor tests run the real Supervisor and the real runner (services/runner.py) in tiny
child processes that load no model, so they take seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services import messages
from services.endpoints import Endpoints
from services.health import HeartbeatRecord, check, heartbeat_path, read_record, write_record
from services.heartbeat import Heartbeat, heartbeat_timeout_s
from services.settings_util import SettingsError
from services.supervisor import Supervisor
from services.transport import Transport

REPO = Path(__file__).resolve().parent.parent

# A service with nothing to do but be ready: the real runner around it sends ServiceReady and
# the heartbeats. It stays unready while a "<name>.noready" file exists in its run folder.
FAKE_SERVICE = """
import asyncio, os, sys
from services.runner import run_service

name = sys.argv[1]

async def main(transport, ready):
    if not os.path.exists(os.path.join(os.environ["AVATAR_RUN_DIR"], name + ".noready")):
        await ready()
    await asyncio.Event().wait()

sys.exit(run_service(name, main))
"""


def fake_command(name: str) -> list[str]:
    return [sys.executable, "-c", FAKE_SERVICE, name]


async def _until(predicate, timeout_s: float, what: str) -> float:  # noqa: ANN001
    """Seconds until ``predicate()`` holds (children are other processes: we can only look)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what} not within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def _beating_pid(run_dir: Path, service: str) -> int | None:
    """The pid in the service's heartbeat file, if it beat in the last second."""
    try:
        record = read_record(heartbeat_path(service, {"AVATAR_RUN_DIR": str(run_dir)}))
    except RuntimeError:
        return None
    return record.pid if time.time() - record.at < 1.5 else None


class _Pipeline:
    """A supervisor of fake services, and the gateway's events socket it reports restarts to."""

    def __init__(self, run_dir: Path, heartbeat_timeout_s: float, ready_timeout_s: float = 60.0) -> None:
        self.run_dir = run_dir
        self.endpoints = Endpoints.from_env(
            {"AVATAR_RUN_DIR": str(run_dir), "AVATAR_SUPERVISOR": f"ipc://{run_dir}/supervisor.sock"}
        )
        env = {
            **os.environ, **self.endpoints.to_env(),
            "AVATAR_RUN_DIR": str(run_dir), "PYTHONPATH": str(REPO), "AVATAR_LOG_LEVEL": "WARNING",
        }
        self.supervisor = Supervisor(
            env, self.endpoints, ready_timeout_s=ready_timeout_s, services=("alpha", "beta"),
            heartbeat_timeout_s=heartbeat_timeout_s, command=fake_command,
        )
        self.ready = asyncio.Event()
        self.restarts: list[messages.ServiceRestarted] = []

    async def __aenter__(self) -> "_Pipeline":
        self._transport = Transport(self.endpoints)
        events = self._transport.pull(self.endpoints.gateway_events)
        self._events = asyncio.create_task(self._collect(events), name="test-events")
        self._run = asyncio.create_task(self.supervisor.run(self.ready.set), name="test-supervisor")
        await asyncio.wait_for(self.ready.wait(), 60)
        return self

    async def _collect(self, events) -> None:  # noqa: ANN001
        while True:
            msg = await events.recv()
            if isinstance(msg, messages.ServiceRestarted):
                self.restarts.append(msg)

    async def __aexit__(self, *exc: object) -> None:
        self.supervisor.stop()
        try:
            self.code = await asyncio.wait_for(self._run, 30)
        finally:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events
            self._transport.close()

    def pid(self, service: str) -> int | None:
        return _beating_pid(self.run_dir, service)


# --- the supervisor's watchdog --------------------------------------------------------------


async def test_a_stopped_service_is_killed_and_restarted_within_the_timeout(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="services.supervisor")
    timeout_s = 3.0  # three missed beats: a loaded machine never misses that many
    async with _Pipeline(tmp_path, timeout_s) as pipe:
        await _until(lambda: pipe.pid("alpha") and pipe.pid("beta"), 10, "both beating")
        stopped, other = pipe.pid("alpha"), pipe.pid("beta")
        os.kill(stopped, signal.SIGSTOP)
        took_s = await _until(
            lambda: pipe.pid("alpha") not in (None, stopped), timeout_s + 10, "a new alpha beating"
        )
        # Detection takes the timeout; the rest is backoff (0.5 s) and starting a python.
        assert took_s < timeout_s + 8
        assert pipe.pid("beta") == other, "the healthy service was left alone"
        await _until(lambda: pipe.restarts, 5, "ServiceRestarted to the gateway")
        assert [(r.service, r.exit_code) for r in pipe.restarts] == [("alpha", -signal.SIGKILL)]
        with pytest.raises(ProcessLookupError):
            os.kill(stopped, 0)  # SIGKILL worked on a stopped process (and it was reaped)
    assert pipe.code == 0
    logs = caplog.text
    assert "alpha sent no heartbeat for" in logs and ": restarting" in logs
    assert "beta sent no heartbeat" not in logs


async def test_a_restarted_service_that_never_gets_ready_is_killed_again(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="services.supervisor")
    async with _Pipeline(tmp_path, heartbeat_timeout_s=30.0, ready_timeout_s=3.0) as pipe:
        await _until(lambda: pipe.pid("alpha"), 10, "alpha beating")
        first = pipe.pid("alpha")
        (tmp_path / "alpha.noready").touch()
        os.kill(first, signal.SIGKILL)
        await _until(lambda: "alpha not ready 3 s after its restart" in caplog.text, 20, "the ready watchdog")
        (tmp_path / "alpha.noready").unlink()
        await _until(lambda: pipe.pid("alpha") not in (None, first), 15, "alpha ready again")
    assert pipe.code == 0
    assert [r.service for r in pipe.restarts] == ["alpha", "alpha"]


def test_heartbeat_timeout_setting():
    assert heartbeat_timeout_s({}) == 10.0
    assert heartbeat_timeout_s({"AVATAR_HEARTBEAT_TIMEOUT_S": "2.5"}) == 2.5
    with pytest.raises(SettingsError, match="AVATAR_HEARTBEAT_TIMEOUT_S"):
        heartbeat_timeout_s({"AVATAR_HEARTBEAT_TIMEOUT_S": "0"})


# --- the heartbeat task -----------------------------------------------------------------------


class _Recorder:
    """A Sender that records what it is given; ``stuck`` makes it never finish sending."""

    def __init__(self, stuck: bool = False) -> None:
        self.sent: list[messages.ServiceHeartbeat] = []
        self.stuck = stuck

    async def send(self, msg: messages.ServiceHeartbeat) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        self.sent.append(msg)


async def test_heartbeat_beats_to_supervisor_and_file_and_removes_the_file_when_stopped(tmp_path):
    path = str(tmp_path / "beat")
    sender = _Recorder()
    task = asyncio.create_task(Heartbeat("llm", sender, path, interval_s=0.05).run())
    await _until(lambda: len(sender.sent) >= 3, 5, "three beats")
    record = read_record(path)
    assert (record.service, record.pid) == ("llm", os.getpid())
    assert abs(record.at - time.time()) < 1
    assert {(b.service, b.pid) for b in sender.sent} == {("llm", os.getpid())}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not os.path.exists(path)


async def test_a_supervisor_that_takes_nothing_does_not_stop_the_file_beats(tmp_path):
    path = str(tmp_path / "beat")
    task = asyncio.create_task(Heartbeat("tts", _Recorder(stuck=True), path, interval_s=0.05).run())
    await _until(lambda: os.path.exists(path), 5, "a first beat")
    first = read_record(path).at
    await _until(lambda: read_record(path).at > first, 5, "a later beat")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_blocked_loop_stops_the_beats(tmp_path):
    path = str(tmp_path / "beat")
    sender = _Recorder()
    task = asyncio.create_task(Heartbeat("asr", sender, path, interval_s=0.05).run())
    await _until(lambda: sender.sent, 5, "a first beat")
    count = len(sender.sent)
    time.sleep(0.5)  # a blocking call on the loop, on purpose
    assert len(sender.sent) == count
    await _until(lambda: len(sender.sent) >= count + 3, 5, "beats again")
    # After the stall it beats on from now; it does not burst ten beats to catch up.
    times = [b.at for b in sender.sent[count - 1:]]
    assert times[1] - times[0] >= 0.5
    assert min(b - a for a, b in zip(times[1:], times[2:])) > 0.03
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_heartbeat_message_roundtrip():
    beat = messages.ServiceHeartbeat("", 0, "lipsync", 4242, 1700000000.25)
    assert messages.decode([bytes(f) for f in messages.encode(beat)]) == beat


# --- python -m services.health ----------------------------------------------------------------


def _health(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AVATAR_RUN_DIR": str(run_dir), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "services.health", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=30, check=False,
    )


def test_health_command_exit_codes(tmp_path):
    env = {"AVATAR_RUN_DIR": str(tmp_path)}
    missing = _health(tmp_path, "llm")
    assert missing.returncode == 1 and "no heartbeat file" in missing.stderr
    write_record(heartbeat_path("llm", env), HeartbeatRecord("llm", 1, time.time()))
    fresh = _health(tmp_path, "llm")
    assert fresh.returncode == 0, fresh.stderr
    write_record(heartbeat_path("llm", env), HeartbeatRecord("llm", 1, time.time() - 30))
    stale = _health(tmp_path, "llm", "--max-age", "10")
    assert stale.returncode == 1 and "no heartbeat for 30" in stale.stderr
    assert _health(tmp_path, "llm", "--max-age", "60").returncode == 0
    Path(heartbeat_path("llm", env)).write_text("{half a write")
    garbled = _health(tmp_path, "llm")
    assert garbled.returncode == 1 and "unreadable" in garbled.stderr
    assert _health(tmp_path, "nosuchservice").returncode == 2  # argparse: a usage error


def test_health_imports_nothing_heavy():
    code = "import sys, services.health; print(sorted({'numpy', 'zmq', 'msgpack'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_health_kill_kills_only_a_stale_service_process(tmp_path):
    env = {"AVATAR_RUN_DIR": str(tmp_path)}
    sleep = "import time; time.sleep(60)"
    service = subprocess.Popen([sys.executable, "-c", sleep, "services.llm"])
    stranger = subprocess.Popen([sys.executable, "-c", sleep])
    try:
        # Until the child has exec'd, /proc shows the parent's command line.
        deadline = time.monotonic() + 10
        while b"services.llm" not in Path(f"/proc/{service.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        path = heartbeat_path("llm", env)
        write_record(path, HeartbeatRecord("llm", stranger.pid, time.time() - 30))
        healthy, message = check("llm", 10, kill=True, env=env)
        assert not healthy and "killed" not in message
        assert stranger.poll() is None, "a pid that is not services.llm is never killed"
        write_record(path, HeartbeatRecord("llm", service.pid, time.time() - 30))
        healthy, message = check("llm", 10, kill=True, env=env)
        assert not healthy and message.endswith("killed it")
        assert service.wait(10) == -signal.SIGKILL
    finally:
        for proc in (service, stranger):
            proc.kill()
            proc.wait()
