"""The TTS stage: clauses in, 16 kHz voice out, one SpeechAudio per synthesized chunk.

Which session's clause is synthesized next is the scheduler's business
(``services/tts/scheduler.py``: one step at a time, earliest playback deadline first); this
module turns its results into messages and keeps the turn, timing and error bookkeeping.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable

import numpy as np

from services import messages
from services.control import serve_stage
from services.transport import Receiver, Sender
from services.tts.engine import TimedVoice, TtsEngine, voice_pcm
from services.tts.scheduler import SpeechScheduler
from services.turns import TurnTracker

logger = logging.getLogger(__name__)

_EMPTY = np.zeros(0, dtype=np.int16)

# Clauses are small; 64 queued for one session is far more than one answer produces, so more
# means a runaway producer: the extra clauses are dropped and reported, nobody else waits.
MAX_PENDING_CLAUSES = 64


class TtsService:
    def __init__(
        self,
        engine: TtsEngine,
        out: Sender,
        events: Sender,
        clock: Callable[[], float] = time.monotonic,
        max_lead_s: float | None = None,
    ) -> None:
        """``max_lead_s``: how far ahead of its listener a session's voice is synthesized at
        most (scheduler.py); None: as far as the clauses go."""
        self._out = out
        self._events = events
        self.turns = TurnTracker()
        # One synthesis at a time: the model is shared and 2 cores gain nothing from two.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tts")
        self.scheduler = SpeechScheduler(
            engine.synthesize, self, self._pool, max_pending=MAX_PENDING_CLAUSES, clock=clock,
            max_lead_s=max_lead_s,
        )
        self._turn_started: dict[tuple[str, int], float] = {}
        self._out_index: dict[str, int] = {}

    async def handle(self, msg: messages.TextChunk) -> None:
        if self.turns.is_stale(msg.session, msg.turn):
            return
        if self.turns.advance(msg.session, msg.turn):
            self._drop(msg.session)
        if msg.index == 0:
            self._turn_started[(msg.session, msg.turn)] = time.monotonic()
        if not self.scheduler.submit(msg):
            logger.warning(
                "Session(%s) turn %d: %d clauses already queued, dropped clause %d",
                msg.session, msg.turn, self.scheduler.pending(msg.session), msg.index,
            )
            await self._events.send(
                messages.StageError(
                    msg.session, msg.turn, "tts", "too much text queued: a clause was not spoken"
                )
            )

    def on_interrupt(self, msg: messages.Interrupt) -> None:
        self._drop(msg.session)

    def on_close(self, session: str) -> None:
        self.scheduler.close(session)
        self._out_index.pop(session, None)
        for key in [k for k in self._turn_started if k[0] == session]:
            del self._turn_started[key]

    def _drop(self, session: str) -> None:
        """The session moved to a newer turn: stop its synthesis and forget older turns."""
        self.scheduler.interrupt(session)
        current = self.turns.current(session)
        for key in [k for k in self._turn_started if k[0] == session and k[1] < current]:
            del self._turn_started[key]

    def _next_index(self, session: str) -> int:
        index = self._out_index.get(session, 0)
        self._out_index[session] = index + 1
        return index

    # --- SpeechSink: what the scheduler produces --------------------------------------------

    async def on_audio(self, clause: messages.TextChunk, chunk: np.ndarray | TimedVoice, first: bool) -> None:
        session, turn = clause.session, clause.turn
        started = self._turn_started.pop((session, turn), None)
        if started is not None:
            ms = (time.monotonic() - started) * 1000
            logger.info("Session(%s) turn %d: tts first audio after %.0f ms", session, turn, ms)
            await self._events.send(messages.StageTiming(session, turn, "tts", "first_audio", ms))
        text = clause.text if first else ""  # the clause text travels with its first audio only
        phonemes = chunk.phonemes if isinstance(chunk, TimedVoice) else ""
        await self._out.send(messages.SpeechAudio(
            session, turn, self._next_index(session), text, voice_pcm(chunk), False, phonemes
        ))

    async def on_failure(self, clause: messages.TextChunk, exc: Exception) -> None:
        logger.error("Session(%s) turn %d: synthesis failed", clause.session, clause.turn, exc_info=exc)
        await self._events.send(
            messages.StageError(clause.session, clause.turn, "tts", f"speech synthesis failed: {exc}")
        )

    async def on_clause_done(self, clause: messages.TextChunk) -> None:
        if clause.final:
            index = self._next_index(clause.session)
            await self._out.send(messages.SpeechAudio(clause.session, clause.turn, index, "", _EMPTY, True))

    async def run(self, inbox: Receiver, control: Receiver) -> None:
        # The scheduler stands in for SessionLanes: serve_stage only needs its aclose().
        await serve_stage("tts", self, messages.TextChunk, inbox, control, self.scheduler, self._pool)
