"""Messages from the gateway to a stage (ASR, LLM, TTS), queued per session, sent by one task.

The gateway's event loop and its pages' handlers serve every session, so none of them may await
a stage's socket: a stage that is down, restarting, loading its model (the LLM binds its inbox
only once loaded: minutes for a 7B model) or not reading fills the socket's queue (one
high-water mark shared by every session), and that await would hold every other session's
microphone, Stop, pings, transcripts and barge-ins behind it. Instead the caller ``put``s the
message here and returns at once; the outbox's ``run`` task (owned and cancelled by the gateway)
does all the sending.

Invariants:
- ``put`` never waits. Each session has its own backlog of at most ``per_session`` messages;
  when it is full the session's oldest message goes (counted and logged), so nothing of another
  session is lost or waits. ``LATEST_ONLY`` (one slot) makes that "the latest wins": the LLM's
  newer question replaces the older unsent one, since the user has moved on.
- Sessions take turns at the socket, one message each per pass, and a session that just sent
  goes to the back: one session's backlog never queues in front of another's, not even across
  refusals.
- A message whose session closed (``forget``), or that ``stale`` says is out of date (its turn
  moved on), is dropped, never sent: a stage that was down missed the Interrupt that would have told it so.
- The task waits for the socket only when the socket refused a message: then ``Notices.waits``
  hears of every session left waiting (and of each new message while it stays refused), and
  ``Notices.cleared`` of each session once nothing of it waits. The LLM's notices tell the page
  why its question waits (llm_outbox.py); the ASR's and the TTS's tell nobody.

Three sessions sending at once: each ``put`` appends to its own session's backlog and wakes the
task; the task sends one message of each session per pass until all are empty. A refusal (the
socket full) stops the pass, and the next one starts with the session that was refused: at most
one message of every other session ever goes before a session's next one.

One stage stalled (down, or not reading): only its outbox's task waits, on that stage's socket
(woken when it connects or reads, else every ``_RETRY_S``). The other stages' outboxes, the
event loop and every page go on. Each session keeps only its latest ``per_session`` messages for
that stage (1 s of microphone, 64 clauses, the latest question). When the stage is back, what a
barge-in or Stop made stale meanwhile is dropped and the rest goes, sessions taking turns. Messages that were
already in the socket's own queue when the stage stalled arrive later; the stage drops those
whose turn is stale by their stamp.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from services.transport import Sender

logger = logging.getLogger(__name__)

# How often to try again when the socket gives no sign (normally it wakes the task at once when
# the stage connects or reads).
_RETRY_S = 1.0
# One slot per session: a newer message replaces the unsent older one.
LATEST_ONLY = 1


class Stamped(Protocol):
    """What the outbox reads of a message: every message between stages carries both."""

    @property
    def session(self) -> str: ...

    @property
    def turn(self) -> int: ...


M = TypeVar("M", bound=Stamped)


class Notices:
    """What the outbox tells of a session's wait. This one tells nobody."""

    def waits(self, session: str, reached: bool) -> None:
        """``session`` has messages waiting behind a refusal; ``reached``: the stage took one
        since the gateway started (it went away), else never (it is still starting)."""

    def cleared(self, session: str) -> None:
        """Nothing of ``session`` waits any more: sent, out of date, or the session closed."""


class StageOutbox(Generic[M]):
    def __init__(
        self,
        stage: str,
        sender: Sender,
        per_session: int,
        stale: Callable[[M], bool] = lambda msg: False,
        notices: Notices | None = None,
    ) -> None:
        """``per_session``: the most messages one session may have waiting; ``stale(msg)``:
        True when ``msg`` is no longer worth sending (its session closed, its turn moved on);
        ``notices``: who hears of a session's wait (by default nobody)."""
        self.stage = stage
        self._sender = sender
        self._per_session = per_session
        self._stale = stale
        self._notices = notices or Notices()
        # In turn order: the session at the front sends next.
        self._queues: dict[str, collections.deque[M]] = {}
        self._wake = asyncio.Event()
        self._refused = False  # the socket refused the last try
        self.dropped: dict[str, int] = {}
        self.sent = 0

    def put(self, msg: M) -> None:
        """Queue ``msg`` for sending; returns at once."""
        session = msg.session
        queue = self._queues.get(session)
        if queue is None:
            queue = self._queues[session] = collections.deque()
        if len(queue) >= self._per_session:
            old = queue.popleft()
            n = self.dropped[session] = self.dropped.get(session, 0) + 1
            if n == 1 or n % 50 == 0:
                logger.warning("Session(%s) the %s has not taken its messages: turn %d's oldest dropped for turn %d's "
                               "(%d so far)", session, self.stage, old.turn, msg.turn, n)
        queue.append(msg)
        if self._refused:
            self._notices.waits(session, self.sent > 0)  # now, not when the socket next wakes the task
        self._wake.set()

    def forget(self, session: str) -> None:
        """The session closed: what it had waiting is not sent."""
        if self._queues.pop(session, None) is not None:
            self._notices.cleared(session)
        self.dropped.pop(session, None)

    def waiting(self) -> dict[str, list[int]]:
        """Each session's unsent messages by turn, oldest first (for tests and benchmarks)."""
        return {session: [msg.turn for msg in queue] for session, queue in self._queues.items()}

    async def run(self) -> None:
        """Send what is queued until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not self._flush():
                for session in self._queues:
                    self._notices.waits(session, self.sent > 0)
                # Refused: the stage is absent or its queue is full. Awakened by the socket
                # (it connected, or took messages), or after _RETRY_S.
                await self._sender.wait_writable(_RETRY_S)

    def _flush(self) -> bool:
        """Send everything queued, one message per session per pass; False when refused."""
        self._refused = False
        while self._queues:
            for session in list(self._queues):
                queue = self._queues[session]
                while queue and self._stale(queue[0]):
                    queue.popleft()
                if queue:
                    if not self._sender.try_send(queue[0]):
                        # It stays where it is, ahead of those that sent in this pass: first next time.
                        self._refused = True
                        return False
                    queue.popleft()
                    self.sent += 1
                del self._queues[session]
                if queue:
                    self._queues[session] = queue  # to the back: the others send first
                else:
                    self._notices.cleared(session)
        return True
