"""One browser session: its peer connection, media clock, turn, state and per-turn stats."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection

from services.gateway.conversation import Conversation
from services.gateway.limits import LimitSettings, SessionLimits
from services.gateway.media_clock import SessionMedia

logger = logging.getLogger(__name__)

# Events to one page; a page that cannot keep up with this many is gone.
_OUTBOX_SIZE = 256
# A connected call whose tracks have not asked for media this long has no media (e.g. the
# encoder stalled or the transport died without a state change yet).
_PULL_TIMEOUT_S = 1.0
# Grace after the call connects, before the tracks' first pull.
_CONNECT_GRACE_S = 2.0


@dataclass(slots=True)
class TurnStats:
    turn: int
    speech_end_unix_s: float = 0.0
    stages: dict[str, float | str] = field(default_factory=dict)  # str: a mode, e.g. lipsync_mouth
    first_audio_sent: bool = False


class Session:
    """State of one connected page. Owned and closed by the Gateway."""

    def __init__(self, sid: str, ws: web.WebSocketResponse, media: SessionMedia) -> None:
        self.id = sid
        self.ws = ws
        self.media = media
        self.pc: RTCPeerConnection | None = None
        self.turn = 0
        self.state = "idle"
        # Clauses of the current answer that have actually been played to the user.
        self.heard: list[str] = []
        self.stats: dict[int, TurnStats] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=_OUTBOX_SIZE)
        self.writer = asyncio.create_task(self._write(), name=f"ws-writer-{sid}")
        self.opened_at = time.monotonic()
        # AvatarFrames received for this session (any turn): the base of its flow credit.
        self.frames_received = 0
        self.connected_at: float | None = None
        self.address = "?"
        self.avatar = ""  # the avatar store's id this session shows ("" = the server's default)
        self.limits = SessionLimits(LimitSettings())
        self.last_message_at = time.monotonic()
        # Replaced by the stored one when the page says hello with the id it kept.
        self.conversation = Conversation("")
        # The question of the current turn while its answer is not audible yet (turn, text), and
        # what carries over when the user goes on speaking before the answer starts.
        self.asked: tuple[int, str] | None = None
        self.carry = ""
        # The turn the user's current utterance began in, and the speculative answer started
        # at its first silence (turn, text) until the endpoint commits or drops it.
        self.utterance_turn = 0
        self.asked_line = 0  # the page's line (utterance turn) of ``asked``
        self.speculative: tuple[int, str] | None = None
        # An onset came and its final not yet; the latest words heard of it (partial or
        # tentative); when the final was lost and the gateway stood in for it, the carry it had
        # (turn_keeper.py).
        self.utterance_open = False
        self.said_so_far = ""
        self.stood_in_carry: str | None = None

    # --- media --------------------------------------------------------------------------------

    def has_media(self) -> bool:
        """A call is up and its tracks are pulling units: frames for this session can play."""
        if self.pc is None or self.pc.connectionState != "connected":
            return False
        if self.media.pulling(_PULL_TIMEOUT_S):
            return True
        return self.connected_at is not None and time.monotonic() - self.connected_at < _CONNECT_GRACE_S

    def room(self) -> int:
        return self.media.room()

    # --- to the page ------------------------------------------------------------------------

    def send(self, payload: dict[str, Any]) -> None:
        """Queue an event for the page without waiting (callable from sync callbacks)."""
        try:
            self._outbox.put_nowait(json.dumps(payload))
        except asyncio.QueueFull:
            logger.warning("Session(%s) page is not reading events; dropping %s", self.id, payload.get("type"))

    def error(self, code: str, message: str) -> None:
        self.send({"type": "error", "code": code, "message": message})

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.send({"type": "state", "state": state})

    async def flush_events(self, timeout_s: float = 1.0) -> None:
        """Wait (briefly) until queued events are written, e.g. an error before closing."""
        deadline = time.monotonic() + timeout_s
        while not self._outbox.empty() and time.monotonic() < deadline and not self.writer.done():
            await asyncio.sleep(0.01)

    async def _write(self) -> None:
        while True:
            text = await self._outbox.get()
            if self.ws.closed:
                return
            try:
                await self.ws.send_str(text)
            except (ConnectionResetError, RuntimeError) as exc:
                logger.info("Session(%s) page went away while sending: %s", self.id, exc)
                return

    # --- bookkeeping ------------------------------------------------------------------------

    def turn_stats(self, turn: int) -> TurnStats:
        stats = self.stats.get(turn)
        if stats is None:
            stats = self.stats[turn] = TurnStats(turn)
            for old in [t for t in self.stats if t < turn - 8]:
                del self.stats[old]
        return stats

    def own(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self, timeout_s: float = 3.0) -> None:
        tasks = [*self.tasks, self.writer]
        for task in tasks:
            task.cancel()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), timeout_s)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout_s)
