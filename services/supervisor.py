"""Start, watch and stop the five services on one host (the embedded default).

Each service is its own OS process (own asyncio loop, own GIL). The supervisor waits until all
report ready over ZeroMQ, restarts any that dies (with backoff, logging it and telling the
gateway), and on SIGINT/SIGTERM stops them in phases: SIGTERM, a grace period, then SIGKILL.
Children also get PR_SET_PDEATHSIG, so even a SIGKILLed supervisor leaves no orphans.

A process that hangs is as good as dead, so it is treated as dead. Once ready, every service
sends a heartbeat from its event loop each second (services/heartbeat.py). One that stays
silent for ``heartbeat_timeout_s`` is SIGKILLed (a SIGSTOPped process ignores SIGTERM, and a
stuck loop never runs its handler), and its exit takes the restart path above. A restarted
service that does not become ready within ``ready_timeout_s`` is killed the same way; on the
first start, the whole start-up fails instead (see ``_progress``).

Invariant: only the current process of a child can make it ready or keep it alive. Every
message carries the sender's pid, and one from an earlier process (still queued in the socket
when it was killed) is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from services import messages
from services.endpoints import Endpoints
from services.transport import Transport

logger = logging.getLogger(__name__)

SERVICES = ("gateway", "asr", "llm", "tts", "lipsync")
_PR_SET_PDEATHSIG = 1


class SupervisorError(RuntimeError):
    """A service could not be started or kept running."""


def service_command(name: str) -> list[str]:
    """How a service is started: its own interpreter, its ``python -m services.<name>``."""
    return [sys.executable, "-m", f"services.{name}"]


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM it when the supervisor dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(slots=True)
class _Child:
    name: str
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    restarts: list[float] = field(default_factory=list)
    # time.monotonic() of the current process's last sign of life: spawn, ready or heartbeat.
    last_sign_s: float = 0.0
    # Set on every sign of life, so the watchdog waits on it instead of polling.
    alive: asyncio.Event = field(default_factory=asyncio.Event)
    # Why the watchdog killed the current process (None: it was not killed for a hang).
    hang: str | None = None

    def sign_of_life(self) -> None:
        self.last_sign_s = time.monotonic()
        self.alive.set()


class Supervisor:
    MAX_RESTARTS = 5
    RESTART_WINDOW_S = 120.0
    STOP_GRACE_S = 8.0
    EVENT_SEND_S = 1.0

    def __init__(
        self,
        env: Mapping[str, str],
        endpoints: Endpoints,
        ready_timeout_s: float = 600.0,
        services: tuple[str, ...] = SERVICES,
        heartbeat_timeout_s: float = 10.0,
        command: Callable[[str], list[str]] = service_command,
    ) -> None:
        self._env = dict(env)
        self._endpoints = endpoints
        self._ready_timeout_s = ready_timeout_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._command = command
        self._children = {name: _Child(name) for name in services}
        self._stopping = asyncio.Event()
        self._all_ready = asyncio.Event()
        self._failure: str | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def _spawn(self, child: _Child) -> None:
        child.ready = False
        child.hang = None
        child.proc = await asyncio.create_subprocess_exec(
            *self._command(child.name), env=self._env, preexec_fn=_die_with_parent,
        )
        child.sign_of_life()
        logger.info("started %s (pid %d)", child.name, child.proc.pid)

    async def run(self, on_ready) -> int:  # noqa: ANN001 (callable taking no args)
        transport = Transport(self._endpoints)
        ready_rx = transport.pull(self._endpoints.supervisor)
        events_tx = transport.push(self._endpoints.gateway_events)
        tasks: list[asyncio.Task[None]] = []
        try:
            for child in self._children.values():
                await self._spawn(child)
            tasks.append(asyncio.create_task(self._readiness(ready_rx, on_ready), name="sup-ready"))
            tasks.append(asyncio.create_task(self._progress(), name="sup-progress"))
            for child in self._children.values():
                tasks.append(asyncio.create_task(self._watch(child, events_tx), name=f"sup-{child.name}"))
                tasks.append(asyncio.create_task(self._watchdog(child), name=f"sup-{child.name}-watchdog"))
            await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_all()
            transport.close()
        if self._failure:
            logger.error("%s", self._failure)
            return 1
        return 0

    async def _readiness(self, ready_rx, on_ready) -> None:  # noqa: ANN001
        """ServiceReady and ServiceHeartbeat, from every child, on the one supervisor socket."""
        while True:
            msg = await ready_rx.recv()
            if not isinstance(msg, (messages.ServiceReady, messages.ServiceHeartbeat)):
                continue
            child = self._children.get(msg.service)
            if child is None or child.proc is None or child.proc.pid != msg.pid:
                continue  # an earlier process of this child, or not ours
            child.sign_of_life()
            if isinstance(msg, messages.ServiceHeartbeat) or child.ready:
                continue
            child.ready = True
            logger.info("%s is ready", msg.service)
            if not self._all_ready.is_set() and all(c.ready for c in self._children.values()):
                self._all_ready.set()
                on_ready()

    async def _progress(self) -> None:
        """Show what we are still waiting for while models load (first start converts SmolLM2)."""
        started = time.monotonic()
        while not self._all_ready.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._all_ready.wait(), 10)
            waiting = [c.name for c in self._children.values() if not c.ready]
            if waiting and not self._all_ready.is_set():
                elapsed = time.monotonic() - started
                logger.info("waiting for %s to load (%.0f s)", ", ".join(waiting), elapsed)
                if elapsed > self._ready_timeout_s:
                    self._failure = f"services not ready after {self._ready_timeout_s:.0f} s: {', '.join(waiting)}"
                    self.stop()
                    return

    async def _watch(self, child: _Child, events_tx) -> None:  # noqa: ANN001
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < self.RESTART_WINDOW_S] + [now]
            if len(child.restarts) > self.MAX_RESTARTS:
                self._failure = (
                    f"{child.name} died {len(child.restarts)} times in {self.RESTART_WINDOW_S:.0f} s "
                    f"(last exit code {code}); see its log above"
                )
                self.stop()
                return
            delay = min(30.0, 0.5 * 2 ** (len(child.restarts) - 1))
            if child.hang is not None:
                logger.error("%s was killed (%s); restarting in %.1f s", child.name, child.hang, delay)
            else:
                logger.error("%s exited with code %s; restarting in %.1f s", child.name, code, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            await self._spawn(child)
            # Bounded: with the gateway itself down the socket may be full, and this task must
            # stay free to restart the child again.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.EVENT_SEND_S):
                    await events_tx.send(messages.ServiceRestarted("", 0, child.name, code))

    async def _watchdog(self, child: _Child) -> None:
        """Kill the child's current process when it has been silent too long.

        Ready: silent means no heartbeat for ``heartbeat_timeout_s``. Not ready after a restart:
        no ServiceReady within ``ready_timeout_s``. Not ready on the first start: ``_progress``
        owns that, so the watchdog waits. A dead or already killed process is ``_watch``'s.
        """
        while True:
            child.alive.clear()
            proc = child.proc
            waiting_first_start = not child.ready and not self._all_ready.is_set()
            if proc is None or proc.returncode is not None or child.hang is not None or waiting_first_start:
                await child.alive.wait()
                continue
            limit_s = self._heartbeat_timeout_s if child.ready else self._ready_timeout_s
            remaining_s = child.last_sign_s + limit_s - time.monotonic()
            if remaining_s > 0:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the cancel at stop
                # when a heartbeat lands at the same moment.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining_s):
                        await child.alive.wait()
                continue
            silent_s = time.monotonic() - child.last_sign_s
            if child.ready:
                child.hang = f"no heartbeat for {silent_s:.1f} s"
                logger.error("%s sent no heartbeat for %.1f s: restarting", child.name, silent_s)
            else:
                child.hang = f"not ready after {silent_s:.0f} s"
                logger.error("%s not ready %.0f s after its restart: restarting", child.name, silent_s)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def _stop_all(self) -> None:
        procs = [c.proc for c in self._children.values() if c.proc is not None and c.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), self.STOP_GRACE_S)
        except asyncio.TimeoutError:
            for proc in procs:
                if proc.returncode is None:
                    logger.warning("pid %d did not stop in %.0f s; killing it", proc.pid, self.STOP_GRACE_S)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in procs), return_exceptions=True)
        logger.info("all services stopped")
