"""The lip-sync stage: voice in, AvatarFrame units (one image + its 640 samples) out."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time

import numpy as np

from services import messages
from services.control import serve_stage
from services.lanes import SessionLanes, iterate_in_thread
from services.lipsync.engine import LipsyncEngine
from services.media import SAMPLES_PER_VIDEO_FRAME
from services.transport import Receiver, Sender
from services.turns import TurnTracker

logger = logging.getLogger(__name__)


def audio_units(pcm: np.ndarray) -> list[np.ndarray]:
    """Cut voice into 640-sample units; the last one is zero-padded (never dropped)."""
    n = -(-len(pcm) // SAMPLES_PER_VIDEO_FRAME)
    padded = np.zeros(n * SAMPLES_PER_VIDEO_FRAME, dtype=np.int16)
    padded[: len(pcm)] = pcm
    return [padded[i * SAMPLES_PER_VIDEO_FRAME : (i + 1) * SAMPLES_PER_VIDEO_FRAME] for i in range(n)]


class LipsyncService:
    def __init__(self, engine: LipsyncEngine, out: Sender, events: Sender) -> None:
        self._engine = engine
        self._out = out
        self._events = events
        self.turns = TurnTracker()
        # Bounded in media time by the sockets' HWM upstream; 32 clause chunks is ample.
        self._lanes: SessionLanes[messages.SpeechAudio] = SessionLanes(
            "lipsync", self._animate, maxsize=32
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lipsync")
        self._frame_index: dict[str, int] = {}
        self._first_audio: dict[tuple[str, int], float] = {}

    async def handle(self, msg: messages.SpeechAudio) -> None:
        if self.turns.is_stale(msg.session, msg.turn):
            return
        if self.turns.advance(msg.session, msg.turn):
            self._lanes.interrupt(msg.session)
        self._first_audio.setdefault((msg.session, msg.turn), time.monotonic())
        await self._lanes.put(msg.session, msg)

    def on_interrupt(self, msg: messages.Interrupt) -> None:
        self._lanes.interrupt(msg.session)

    def on_close(self, session: str) -> None:
        self._lanes.close(session)
        self._frame_index.pop(session, None)
        for key in [k for k in self._first_audio if k[0] == session]:
            del self._first_audio[key]

    async def _animate(self, speech: messages.SpeechAudio) -> None:
        session, turn = speech.session, speech.turn

        def stale() -> bool:
            return self.turns.is_stale(session, turn)

        units = audio_units(speech.pcm)
        if not units:
            if speech.final and not stale():
                await self._emit_silence_final(session, turn)
            return
        first_index = self._frame_index.get(session, 0)
        loop = asyncio.get_running_loop()
        frames = iter(self._engine.frames(speech.pcm, first_index))
        sent = 0
        try:
            async for image in iterate_in_thread(loop, self._pool, frames, stale):
                if sent >= len(units):
                    break
                started = self._first_audio.pop((session, turn), None)
                if started is not None:
                    ms = (time.monotonic() - started) * 1000
                    logger.info("Session(%s) turn %d: lipsync first frame after %.0f ms", session, turn, ms)
                    await self._events.send(messages.StageTiming(session, turn, "lipsync", "first_frame", ms))
                await self._out.send(
                    messages.AvatarFrame(
                        session, turn, first_index + sent, image, units[sent],
                        speech.text if sent == 0 else "",
                        speech.final and sent == len(units) - 1,
                    )
                )
                sent += 1
        except Exception as exc:
            logger.exception("Session(%s) turn %d: lip-sync failed", session, turn)
            await self._events.send(messages.StageError(session, turn, "lipsync", f"lip-sync failed: {exc}"))
        finally:
            self._frame_index[session] = first_index + sent
        if speech.final and sent < len(units) and not stale():
            await self._emit_silence_final(session, turn)

    async def _emit_silence_final(self, session: str, turn: int) -> None:
        """The answer ended on an empty chunk: one idle frame of silence carries final=True."""
        index = self._frame_index.get(session, 0)
        image = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._engine.idle_frame, index
        )
        silence = np.zeros(SAMPLES_PER_VIDEO_FRAME, dtype=np.int16)
        await self._out.send(messages.AvatarFrame(session, turn, index, image, silence, "", True))
        self._frame_index[session] = index + 1

    async def run(self, inbox: Receiver, control: Receiver) -> None:
        await serve_stage("lipsync", self, messages.SpeechAudio, inbox, control, self._lanes, self._pool)
