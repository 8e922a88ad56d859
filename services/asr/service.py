"""The ASR stage: microphone audio in; speech onsets, transcripts and finished utterances out.

Onsets go to the gateway at once (they drive barge-in); partial and final transcripts go to
the gateway, which shows them and, for a final one, asks the LLM with the conversation so far
(the gateway owns the conversation, so it is the one that sends the question on).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

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
from services.lanes import SessionLanes
from services.transport import Receiver, Sender
from services.turns import TurnTracker

logger = logging.getLogger(__name__)


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
        # 25 chunks of 20 ms = 500 ms of audio may queue per session before the socket pushes back.
        self._lanes: SessionLanes[messages.AudioIn] = SessionLanes("asr", self._listen, maxsize=25)
        # Two threads: sessions decode in parallel on the two cores; one session stays ordered
        # because its lane awaits each chunk before the next.
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="asr")

    async def handle(self, msg: messages.AudioIn) -> None:
        # Audio is never stale by turn (the user may talk over anything); only closed sessions.
        if self.turns.is_closed(msg.session):
            return
        self.turns.advance(msg.session, msg.turn)
        await self._lanes.put(msg.session, msg)

    def on_interrupt(self, msg: messages.Interrupt) -> None:
        """The turn moved on (our own onset, or typed text): nothing to cancel here."""

    def on_close(self, session: str) -> None:
        self._lanes.close(session)
        tracker = self._trackers.pop(session, None)
        if tracker is not None:
            self._pool.submit(tracker.close)

    async def _listen(self, msg: messages.AudioIn) -> None:
        loop = asyncio.get_running_loop()
        tracker = self._trackers.get(msg.session)
        if tracker is None:
            vad = await loop.run_in_executor(self._pool, self._make_vad)
            tracker = self._trackers[msg.session] = UtteranceTracker(self._engine, vad, self._settings)
        # Whatever queued up meanwhile goes in the same thread hop: measured on a loaded
        # 2-core box, one hop per 20 ms chunk kept this lane ~200 ms behind the microphone,
        # which delayed every barge-in by as much.
        batch = [msg, *self._lanes.drain(msg.session)]
        pcm = batch[0].pcm if len(batch) == 1 else np.concatenate([m.pcm for m in batch])
        audible = any(m.avatar_audible for m in batch)
        events = await loop.run_in_executor(self._pool, tracker.process, pcm, audible)
        await self._report(msg.session, events)
        while tracker.has_pending():
            # An onset cut the call short so it could be reported first; finish the audio.
            events = await loop.run_in_executor(self._pool, tracker.process, NO_AUDIO, audible)
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
        await serve_stage("asr", self, messages.AudioIn, inbox, control, self._lanes, self._pool)
