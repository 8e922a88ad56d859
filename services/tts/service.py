"""The TTS stage: clauses in, 16 kHz voice out, one SpeechAudio per synthesized chunk."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time

import numpy as np

from services import messages
from services.control import serve_stage
from services.lanes import SessionLanes, iterate_in_thread
from services.transport import Receiver, Sender
from services.tts.engine import TtsEngine
from services.turns import TurnTracker

logger = logging.getLogger(__name__)

_EMPTY = np.zeros(0, dtype=np.int16)


class TtsService:
    def __init__(self, engine: TtsEngine, out: Sender, events: Sender) -> None:
        self._engine = engine
        self._out = out
        self._events = events
        self.turns = TurnTracker()
        # Clauses are small; 64 of them is far more than one answer produces.
        self._lanes: SessionLanes[messages.TextChunk] = SessionLanes("tts", self._speak, maxsize=64)
        # One synthesis at a time: the model is shared and 2 cores gain nothing from two.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tts")
        self._turn_started: dict[tuple[str, int], float] = {}
        self._out_index: dict[str, int] = {}

    async def handle(self, msg: messages.TextChunk) -> None:
        if self.turns.is_stale(msg.session, msg.turn):
            return
        if self.turns.advance(msg.session, msg.turn):
            self._lanes.interrupt(msg.session)
        if msg.index == 0:
            self._turn_started[(msg.session, msg.turn)] = time.monotonic()
        await self._lanes.put(msg.session, msg)

    def on_interrupt(self, msg: messages.Interrupt) -> None:
        self._lanes.interrupt(msg.session)

    def on_close(self, session: str) -> None:
        self._lanes.close(session)
        self._out_index.pop(session, None)
        for key in [k for k in self._turn_started if k[0] == session]:
            del self._turn_started[key]

    def _next_index(self, session: str) -> int:
        index = self._out_index.get(session, 0)
        self._out_index[session] = index + 1
        return index

    async def _speak(self, chunk: messages.TextChunk) -> None:
        session, turn = chunk.session, chunk.turn

        def stale() -> bool:
            return self.turns.is_stale(session, turn)

        if chunk.text:
            loop = asyncio.get_running_loop()
            text = chunk.text
            try:
                async for pcm in iterate_in_thread(
                    loop, self._pool, iter(self._engine.synthesize(chunk.text)), stale
                ):
                    started = self._turn_started.pop((session, turn), None)
                    if started is not None:
                        ms = (time.monotonic() - started) * 1000
                        logger.info("Session(%s) turn %d: tts first audio after %.0f ms", session, turn, ms)
                        await self._events.send(messages.StageTiming(session, turn, "tts", "first_audio", ms))
                    await self._out.send(
                        messages.SpeechAudio(session, turn, self._next_index(session), text, pcm, False)
                    )
                    text = ""  # the clause text travels with its first audio only
            except Exception as exc:
                logger.exception("Session(%s) turn %d: synthesis failed", session, turn)
                await self._events.send(
                    messages.StageError(session, turn, "tts", f"speech synthesis failed: {exc}")
                )
        if chunk.final and not stale():
            await self._out.send(
                messages.SpeechAudio(session, turn, self._next_index(session), "", _EMPTY, True)
            )

    async def run(self, inbox: Receiver, control: Receiver) -> None:
        await serve_stage("tts", self, messages.TextChunk, inbox, control, self._lanes, self._pool)
