"""Per-session flow control: the gateway grants each session credits for the frames it has
room for, so lip-sync renders just in time and no session's backpressure reaches another.

Invariants:
- The gateway never waits on a session's queue. Frames arrive only within the credit, and a
  frame beyond it (a credit overrun, e.g. a restarted lip-sync) is dropped and counted.
- A session without playing media (no call, ICE failed, peer closed, tracks no longer pulling)
  is granted no frames: lip-sync sends its answer as text instead (``AvatarText``).
- A credit is a window (frames received + room), so a lost or repeated message does no harm;
  each session's credit is re-sent when it changes and at least every ``REFRESH_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from services import messages
from services.transport import Sender

logger = logging.getLogger(__name__)


class FlowSession(Protocol):
    """What flow control needs of a gateway session."""

    id: str
    turn: int
    frames_received: int

    def has_media(self) -> bool: ...

    def room(self) -> int: ...


@dataclass(slots=True)
class _Sent:
    received: int
    room: int
    media: bool
    at: float


class FlowControl:
    """Sends each session's credit when ``poke``d (a unit played, a flush, a call came or went)
    and at least every ``REFRESH_S``: lost credits, a restarted lip-sync and media that stopped
    pulling without a state change are all caught by the refresh."""

    REFRESH_S = 0.25

    def __init__(
        self,
        control: Sender,
        sessions: Callable[[], list[FlowSession]],
        on_media_lost: Callable[[FlowSession], None],
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._control = control
        self._sessions = sessions
        self._on_media_lost = on_media_lost
        self._now = now
        self._sent: dict[str, _Sent] = {}
        self._poke = asyncio.Event()

    def poke(self) -> None:
        """Something changed a session's room or media: send credits now (callable from sync code)."""
        self._poke.set()

    def credits(self) -> list[messages.FlowCredit]:
        """The credits due now (changed ones, and stale ones to refresh); updates bookkeeping."""
        now = self._now()
        due = []
        live = set()
        for session in self._sessions():
            live.add(session.id)
            media = session.has_media()
            room = session.room() if media else 0
            last = self._sent.get(session.id)
            if last is not None and last.media and not media:
                self._on_media_lost(session)
            if (
                last is None
                or (last.received + last.room, last.media) != (session.frames_received + room, media)
                or now - last.at >= self.REFRESH_S
            ):
                self._sent[session.id] = _Sent(session.frames_received, room, media, now)
                due.append(
                    messages.FlowCredit(session.id, session.turn, session.frames_received, room, media)
                )
        for gone in [sid for sid in self._sent if sid not in live]:
            del self._sent[gone]
        return due

    async def run(self) -> None:
        """Send credits until cancelled (owned by the gateway)."""
        while True:
            self._poke.clear()
            for credit in self.credits():
                await self._control.send(credit)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.REFRESH_S)
