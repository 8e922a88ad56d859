"""The ASR stage: microphone audio in; speech onsets, transcripts and finished utterances out.

Onsets go to the gateway at once (they drive barge-in); partial and final transcripts go to
the gateway, which shows them and, for a final one, asks the LLM with the conversation so far
(the gateway owns the conversation, so it is the one that sends the question on).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services import messages
from services.asr.engine import AsrEngine
from services.asr.settings import AsrSettings
from services.asr.utterance import (
    NO_AUDIO,
    Final,
    Onset,
    Partial,
    Resumed,
    SpeechProbability,
    Tentative,
    UtteranceTracker,
)
from services.control import serve_stage
from services.lanes import SessionLanes, SessionThreads
from services.transport import Receiver, Sender
from services.turns import TurnTracker

logger = logging.getLogger(__name__)

# Microphone audio a session's lane may hold (in 20 ms chunks) while that session's own work
# runs: a Whisper decode of a long utterance takes seconds on a busy CPU, and the audio that
# follows it must still be heard, in order. Past this the oldest is dropped, never waited for.
_CHUNK_MS = 20
_BACKLOG_MS = 10_000
# The gateway forwards a call's microphone every 20 ms, silence included; no audio for this long
# means it stopped (the call ended or its track went silent), and an utterance cut off by that
# must still get its final, or the question in it would be lost. Long enough that a stalled
# loop (ours or the gateway's) does not cut an utterance; one cut would only split it in two.
AUDIO_GAP_S = 2.0


@dataclass(frozen=True, slots=True)
class _AudioStopped:
    """Queued in a session's lane behind its last audio, when no more came for AUDIO_GAP_S."""

    session: str


class AsrService:
    def __init__(
        self,
        engine: AsrEngine,
        make_vad: Callable[[], SpeechProbability],
        settings: AsrSettings,
        events: Sender,
    ) -> None:
        self._engine = engine
        self._make_vad = make_vad
        self._settings = settings
        self._events = events
        self.turns = TurnTracker()
        self._trackers: dict[str, UtteranceTracker] = {}
        # The shared inbox hands each chunk to its session's lane without waiting (handle), and
        # each session's VAD, endpointing and decodes run on its own thread (SessionThreads): one
        # session's long decode delays neither another's audio nor its onsets (barge-in).
        self._lanes: SessionLanes[messages.AudioIn | _AudioStopped] = SessionLanes(
            "asr", self._listen, maxsize=_BACKLOG_MS // _CHUNK_MS
        )
        self._pool = SessionThreads("asr")
        self._dropped: dict[str, int] = {}
        self.audio_gap_s = AUDIO_GAP_S
        # Per session: when its last chunk came (loop time), and the one timer that checks for a
        # gap. A chunk only notes its time: a timer cancelled and made again every 20 ms per
        # session would fill the loop's timer heap with cancelled handles.
        self._last_audio: dict[str, float] = {}
        self._gap_timers: dict[str, asyncio.TimerHandle] = {}

    async def handle(self, msg: messages.AudioIn) -> None:
        # Audio is never stale by turn (the user may talk over anything); only closed sessions.
        if self.turns.is_closed(msg.session):
            return
        self.turns.advance(msg.session, msg.turn)
        loop = asyncio.get_running_loop()
        self._last_audio[msg.session] = loop.time()
        if msg.session not in self._gap_timers:
            self._gap_timers[msg.session] = loop.call_later(self.audio_gap_s, self._check_gap, msg.session)
        if self._lanes.offer(msg.session, msg) is not None:
            dropped = self._dropped[msg.session] = self._dropped.get(msg.session, 0) + 1
            if dropped == 1 or dropped % 50 == 0:
                logger.warning("Session(%s) asr is %d s behind its microphone: %d chunks of the oldest "
                               "audio dropped", msg.session, _BACKLOG_MS // 1000, dropped)

    def on_interrupt(self, msg: messages.Interrupt) -> None:
        """The turn moved on (our own onset, or typed text): nothing to cancel here."""

    def _check_gap(self, session: str) -> None:
        """The session's gap timer fired: its audio stopped, or more came since it was armed."""
        loop = asyncio.get_running_loop()
        left = self._last_audio.get(session, -math.inf) + self.audio_gap_s - loop.time()
        if left > 0:  # audio came since: wait out the gap from the last chunk
            self._gap_timers[session] = loop.call_later(left, self._check_gap, session)
            return
        self._gap_timers.pop(session, None)
        if not self.turns.is_closed(session):
            self._lanes.offer(session, _AudioStopped(session))

    def on_close(self, session: str) -> None:
        timer = self._gap_timers.pop(session, None)
        if timer is not None:
            timer.cancel()
        self._last_audio.pop(session, None)
        self._lanes.close(session)
        self._dropped.pop(session, None)
        tracker = self._trackers.pop(session, None)
        self._pool.close(session, tracker.close if tracker is not None else None)

    async def _listen(self, item: messages.AudioIn | _AudioStopped) -> None:
        # Whatever queued up meanwhile goes in the same thread hop: measured on a loaded
        # 2-core box, one hop per 20 ms chunk kept this lane ~200 ms behind the microphone,
        # which delayed every barge-in by as much. A stop mark splits the batch, in order.
        run: list[messages.AudioIn] = []
        for queued in [item, *self._lanes.drain(item.session)]:
            if isinstance(queued, _AudioStopped):
                if run:
                    await self._hear(run)
                    run = []
                await self._stopped(queued.session)
            else:
                run.append(queued)
        if run:
            await self._hear(run)

    async def _tracker(self, session: str) -> UtteranceTracker:
        tracker = self._trackers.get(session)
        if tracker is None:
            vad = await asyncio.get_running_loop().run_in_executor(self._pool.get(session), self._make_vad)
            tracker = self._trackers[session] = UtteranceTracker(self._engine, vad, self._settings)
        return tracker

    async def _stopped(self, session: str) -> None:
        tracker = self._trackers.get(session)
        if tracker is not None:
            events = await asyncio.get_running_loop().run_in_executor(self._pool.get(session), tracker.end_of_audio)
            if events:
                logger.info("Session(%s) microphone stopped mid-utterance: closing it", session)
            await self._report(session, events)

    async def _hear(self, batch: list[messages.AudioIn]) -> None:
        msg = batch[0]
        loop = asyncio.get_running_loop()
        thread = self._pool.get(msg.session)
        tracker = await self._tracker(msg.session)
        pcm = batch[0].pcm if len(batch) == 1 else np.concatenate([m.pcm for m in batch])
        audible = any(m.avatar_audible for m in batch)
        events = await loop.run_in_executor(thread, tracker.process, pcm, audible)
        await self._report(msg.session, events)
        while tracker.has_pending():
            # An onset cut the call short so it could be reported first; finish the audio.
            events = await loop.run_in_executor(thread, tracker.process, NO_AUDIO, audible)
            await self._report(msg.session, events)

    async def _report(self, session: str, events: list) -> None:
        for event in events:
            # The gateway bumps the turn when it hears our onset; we tag results with the
            # newest turn we know, which by the end of an utterance includes that bump.
            turn = self.turns.current(session)
            if isinstance(event, Onset):
                logger.debug("Session(%s) speech onset", session)
                await self._events.send(messages.SpeechStarted(session, turn))
            elif isinstance(event, Partial):
                await self._events.send(messages.Transcript(session, turn, event.text, False))
            elif isinstance(event, Final):
                await self._final(session, turn, event)
            elif isinstance(event, Tentative):
                await self._events.send(
                    messages.Transcript(session, turn, event.text, False, event.speech_end_unix_s, tentative=True)
                )
            elif isinstance(event, Resumed):
                await self._events.send(messages.SpeechResumed(session, turn))

    async def _final(self, session: str, turn: int, event: Final) -> None:
        logger.info(
            "Session(%s) turn %d: heard %r (endpoint %.0f ms, decode %.0f ms)",
            session, turn, event.text, event.endpoint_ms, event.decode_ms,
        )
        await self._events.send(
            messages.Transcript(session, turn, event.text, True, event.speech_end_unix_s)
        )
        await self._events.send(messages.StageTiming(session, turn, "asr", "endpoint", event.endpoint_ms))
        await self._events.send(messages.StageTiming(session, turn, "asr", "final", event.decode_ms))

    async def run(self, inbox: Receiver, control: Receiver) -> None:
        try:
            await serve_stage("asr", self, messages.AudioIn, inbox, control, self._lanes, self._pool)
        finally:
            for timer in self._gap_timers.values():
                timer.cancel()
            self._gap_timers.clear()
