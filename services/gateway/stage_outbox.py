"""Messages from the gateway to a stage, queued per session and sent by one owned task.

The microphone's audio to the ASR and ``say``'s clauses to the TTS used to be awaited on the
stage's socket: a stage that is down, restarting or not reading fills the socket's queue (one
high-water mark shared by every session), and then the awaiting coroutine stops: a page's
handler (its Stop and pings wait), the HTTP ``say`` that speaks to every session in turn, or a
microphone whose frames pile up unread in aiortc. Instead the caller puts the message here and
returns at once.

Invariants:
- ``put`` never waits. Each session has its own bounded backlog; when it is full the session's
  oldest message goes (counted and logged), so nothing of another session is lost or waits.
- Sessions take turns at the socket, one message each per pass: one session's backlog never
  queues in front of another's.
- A message whose session closed, or that ``stale`` says is out of date (its turn moved on),
  is dropped, never sent.
- One task (``run``, owned by the gateway) does all sending; it waits for the socket only
  when the socket refused a message, and a new message never waits for that.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from services.transport import Sender

logger = logging.getLogger(__name__)

# How often to try again when the socket gives no sign (normally it wakes the task at once when
# the stage connects or reads).
_RETRY_S = 1.0


class StageOutbox:
    def __init__(
        self,
        stage: str,
        sender: Sender,
        per_session: int,
        stale: Callable[[Any], bool] = lambda msg: False,
    ) -> None:
        """``per_session``: the most messages one session may have waiting; ``stale(msg)``:
        True when ``msg`` is no longer worth sending (its session closed, its turn moved on)."""
        self.stage = stage
        self._sender = sender
        self._per_session = per_session
        self._stale = stale
        self._queues: dict[str, collections.deque[Any]] = {}
        self._wake = asyncio.Event()
        self.dropped: dict[str, int] = {}
        self.sent = 0

    def put(self, session: str, msg: Any) -> None:
        """Queue ``msg`` of ``session`` for sending; returns at once."""
        queue = self._queues.get(session)
        if queue is None:
            queue = self._queues[session] = collections.deque()
        if len(queue) >= self._per_session:
            queue.popleft()
            n = self.dropped[session] = self.dropped.get(session, 0) + 1
            if n == 1 or n % 50 == 0:
                logger.warning("Session(%s) the %s is not taking its messages: %d of the oldest dropped",
                               session, self.stage, n)
        queue.append(msg)
        self._wake.set()

    def forget(self, session: str) -> None:
        """The session closed: what it had waiting is not sent."""
        self._queues.pop(session, None)
        self.dropped.pop(session, None)

    def waiting(self, session: str) -> int:
        queue = self._queues.get(session)
        return len(queue) if queue is not None else 0

    async def run(self) -> None:
        """Send what is queued until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not self._flush():
                # Refused: the stage is absent or its queue is full. Awakened by the socket
                # (it connected, or took messages), or after _RETRY_S.
                await self._sender.wait_writable(_RETRY_S)

    def _flush(self) -> bool:
        """Send everything queued, one message per session per pass; False when refused."""
        while self._queues:
            for session in list(self._queues):
                queue = self._queues.get(session)
                while queue and self._stale(queue[0]):
                    queue.popleft()
                if not queue:
                    self._queues.pop(session, None)
                    continue
                if not self._sender.try_send(queue[0]):
                    return False
                queue.popleft()
                self.sent += 1
        return True
