"""A service proves that its event loop runs: one beat a second, sent from the loop itself.

    service loop --ServiceHeartbeat--> main.py's supervisor (the PUSH socket ServiceReady uses)
                 --heartbeat file----> ``python -m services.health`` (compose healthcheck)

Both come from one task on the service's own loop, so whatever stops that loop (SIGSTOP, a
blocking call on it, a deadlock) stops both. A beat from a thread would keep on through a stuck
loop, which is exactly the hang this is here to catch. The runner (services/runner.py) starts the
task once the service is ready, so "beating" also means "loaded and serving".
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping

from services import messages
from services.health import DEFAULT_MAX_AGE_S, HeartbeatRecord, remove_record, write_record
from services.settings_util import env_float
from services.transport import Sender

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0


def heartbeat_timeout_s(env: Mapping[str, str]) -> float:
    """How long the supervisor lets a ready service stay silent before it restarts it.

    Ten beats by default: one slow beat on a loaded machine must never cost a restart.
    """
    return env_float(env, "AVATAR_HEARTBEAT_TIMEOUT_S", DEFAULT_MAX_AGE_S, 1.0, 3600.0)


class Heartbeat:
    """Beats until cancelled; ``path`` (the health file) is removed when it stops."""

    def __init__(
        self,
        service: str,
        supervisor: Sender | None,
        path: str | None,
        interval_s: float = HEARTBEAT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self._supervisor = supervisor
        self._path = path
        self._interval_s = interval_s
        self._clock = clock
        self._pid = os.getpid()
        self._file_failed = False
        self._send_late = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # Beat n is due at anchor + n * interval: deadlines from a counter, so beats do not drift.
        anchor, n = loop.time(), 0
        try:
            while True:
                await self.beat()
                n += 1
                next_at, now = anchor + n * self._interval_s, loop.time()
                if next_at < now:
                    # The loop was stalled: beat on from now rather than burst to catch up.
                    anchor, n = now, 1
                    next_at = now + self._interval_s
                await asyncio.sleep(next_at - now)
        finally:
            if self._path is not None:
                remove_record(self._path)

    async def beat(self) -> None:
        at = self._clock()
        if self._path is not None:
            self._write(at)
        if self._supervisor is not None:
            await self._send(at)

    def _write(self, at: float) -> None:
        # A few hundred bytes to a local file, on the loop on purpose: the file must prove that
        # this loop runs, and it is far cheaper than a hop to a thread.
        try:
            write_record(self._path, HeartbeatRecord(self._service, self._pid, at))
        except OSError as exc:
            if not self._file_failed:
                logger.warning("%s cannot write its heartbeat file %s: %s", self._service, self._path, exc)
            self._file_failed = True
        else:
            self._file_failed = False

    async def _send(self, at: float) -> None:
        beat = messages.ServiceHeartbeat("", 0, self._service, self._pid, at)
        try:
            # A beat is worth nothing late, and a supervisor that does not read (its socket is
            # full) must not stop the beats to the file. asyncio.timeout, not wait_for: 3.11's
            # wait_for can swallow a cancel that lands as the send completes.
            async with asyncio.timeout(self._interval_s):
                await self._supervisor.send(beat)
        except TimeoutError:
            if not self._send_late:
                logger.warning("%s: the supervisor takes no heartbeats; dropping them", self._service)
            self._send_late = True
        else:
            self._send_late = False
