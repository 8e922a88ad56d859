"""The lip-sync stage: voice in, AvatarFrame units (one image + its 640 samples) out.

One scheduler task serves every session (services/lipsync/schedule.py): it renders only for
sessions with flow credit from the gateway, earliest deadline first, and puts frames of several
sessions into one engine call. A session without media gets its answer's text (AvatarText) at
once and costs no rendering. Voice waits per session; nothing one session does blocks another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time

import numpy as np

from services import messages
from services.control import serve_stage
from services.lipsync.animation_engine import AnimationJob
from services.lipsync.avatars import SessionEngines
from services.lipsync.engine import LipsyncEngine
from services.lipsync.schedule import Clause, FrameSlot, SessionFlow, pick_batch
from services.lipsync.voice_stream import HOLD_MAX_S, VoiceStream
from services.media import SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS
from services.transport import Receiver, Sender
from services.turns import TurnTracker

logger = logging.getLogger(__name__)

# Voice waiting per session: far more than any answer; past it the session is told, not stalled.
MAX_PENDING_FRAMES = 180 * VIDEO_FPS
PROGRESS_EVERY_S = 0.2
_SILENCE = np.zeros(SAMPLES_PER_VIDEO_FRAME, dtype=np.int16)


class LipsyncService:
    def __init__(
        self, engine: LipsyncEngine | SessionEngines, out: Sender, events: Sender, max_batch: int | None = None
    ) -> None:
        # Each session's avatar: the engine's model with that avatar (services/lipsync/avatars.py).
        self.engines = engine if isinstance(engine, SessionEngines) else SessionEngines(engine)
        engine = self.engines.default
        self._engine = engine
        self._out = out
        self._events = events
        self._max_batch = max(1, max_batch or engine.max_batch)
        self.turns = TurnTracker()
        self._flows: dict[str, SessionFlow] = {}
        self._streams: dict[str, VoiceStream] = {}
        # One render at a time: the model is shared, and a batch already spans sessions.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lipsync")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._first_audio: dict[tuple[str, int], float] = {}
        self.batches: list[int] = []  # sessions per render call, recent ones (for tests/metrics)
        self._avatar_tasks: set[asyncio.Task[None]] = set()
        self._preparing: dict[str, asyncio.Task[None]] = {}  # avatar -> its upload's preparation

    # --- inputs -----------------------------------------------------------------------------

    def _flow(self, session: str) -> SessionFlow:
        flow = self._flows.get(session)
        if flow is None:
            flow = self._flows[session] = SessionFlow()
        return flow

    async def handle(self, msg: messages.SpeechAudio) -> None:
        if self.turns.is_stale(msg.session, msg.turn):
            return
        flow = self._flow(msg.session)
        if self.turns.advance(msg.session, msg.turn):
            self._drop(msg.session)
        stream = self._streams.get(msg.session)
        if stream is None:
            stream = self._streams[msg.session] = VoiceStream(msg.session)
        self._first_audio.setdefault((msg.session, msg.turn), time.monotonic())
        for clause in stream.feed(msg.turn, msg.text, msg.pcm, msg.final, msg.phonemes):
            await self._queue(flow, clause)
        self._wake.set()

    async def _queue(self, flow: SessionFlow, clause: Clause) -> None:
        if flow.pending_frames() + clause.n_frames > MAX_PENDING_FRAMES:
            logger.warning("Session(%s) turn %d: voice backlog full, clause dropped", clause.session, clause.turn)
            await self._events.send(messages.StageError(
                clause.session, clause.turn, "lipsync", "the answer is longer than lip-sync can hold; part was dropped"
            ))
            if not clause.final:
                return
            clause = Clause.of(clause.session, clause.turn, "", True, clause.pcm[:0])
        flow.clauses.append(clause)

    async def _flush_held(self) -> None:
        """Streams whose next TTS chunk is overdue: render their held tail now."""
        for session, stream in list(self._streams.items()):
            clause = stream.flush_stale()
            flow = self._flows.get(session)
            if clause is not None and flow is not None and not self.turns.is_stale(session, clause.turn):
                await self._queue(flow, clause)

    def on_credit(self, msg: messages.FlowCredit) -> None:
        self._flow(msg.session).apply_credit(msg.received, msg.room, msg.media)
        self._wake.set()

    def on_interrupt(self, msg: messages.Interrupt) -> None:
        self._drop(msg.session)

    def on_avatar(self, msg: messages.SessionAvatar) -> None:
        task = asyncio.get_running_loop().create_task(self._choose(msg), name=f"lipsync-avatar-{msg.session}")
        self._avatar_tasks.add(task)
        task.add_done_callback(self._avatar_tasks.discard)

    def on_prepare(self, msg: messages.PrepareAvatar) -> None:
        """An upload wants the engine's own step of ``msg.avatar`` now (repeats are answered
        from the preparation in flight, or at once when it is done)."""
        if msg.avatar in self._preparing:
            return
        task = asyncio.get_running_loop().create_task(self._prepare(msg.avatar), name=f"lipsync-prepare-{msg.avatar}")
        self._preparing[msg.avatar] = task
        task.add_done_callback(lambda _t: self._preparing.pop(msg.avatar, None))

    async def _prepare(self, avatar: str) -> None:
        name = self._engine.name

        async def tell(step: str, progress: float, state: str, message: str = "") -> None:
            await self._events.send(messages.AvatarPrepared("", 0, avatar, name, step, progress, state, message))

        await tell("starting", 0.0, "preparing")
        work = asyncio.ensure_future(self.engines.prepare(avatar))
        last = None
        try:
            while not work.done():
                # The worker thread updates the progress; it is sent from here at most every 0.2 s.
                await asyncio.wait([work], timeout=PROGRESS_EVERY_S)
                now = self.engines.progress.get(avatar)
                if now is not None and now != last and not work.done():
                    last = now
                    await tell(now[0], now[1], "preparing")
        finally:
            work.cancel()  # when this task is cancelled (shutdown); a no-op once it is done
        try:
            work.result()
        except Exception as exc:  # no face for this engine, a damaged entry: words, not a trace
            logger.warning("avatar %s: %s preparation failed: %s", avatar, name, exc, exc_info=exc)
            await tell("failed", 0.0, "failed", f"the {name} engine could not prepare this avatar: {exc}")
            return
        await tell("ready", 1.0, "ready")

    async def _choose(self, msg: messages.SessionAvatar) -> None:
        problem = await self.engines.choose(msg.session, msg.avatar)
        if problem is not None:
            await self._events.send(messages.StageError(msg.session, msg.turn, "lipsync", problem))
        self._wake.set()  # its waiting voice may render now

    def on_close(self, session: str) -> None:
        self.engines.close(session)
        self._flows.pop(session, None)
        self._streams.pop(session, None)
        for key in [k for k in self._first_audio if k[0] == session]:
            del self._first_audio[key]

    def _drop(self, session: str) -> None:
        """Barge-in: the session's waiting voice goes; a batch in flight is filtered on emit."""
        flow = self._flows.get(session)
        if flow is not None:
            flow.clauses.clear()
        stream = self._streams.get(session)
        if stream is not None:
            stream.reset(-1)

    # --- the scheduler ------------------------------------------------------------------------

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            held = any(s.held_since is not None for s in self._streams.values())
            # A held stream tail must be released on time even if nothing else happens.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), HOLD_MAX_S / 2 if held else None)
            self._wake.clear()
            while True:
                await self._flush_held()
                await self._send_text_only()
                # A session whose avatar is still loading waits (never drawn with another face).
                ready = {s: f for s, f in self._flows.items() if self.engines.ready(s)}
                batch = pick_batch(ready, self._max_batch)
                if not batch:
                    break
                try:
                    images = await loop.run_in_executor(self._pool, self._render, batch)
                except Exception as exc:
                    await self._render_failed(batch, exc)
                    continue
                await self._emit(batch, images)

    def _render(self, batch: list[FrameSlot]) -> list[np.ndarray]:
        """Worker thread: prepare new clauses, then one engine call for every talking frame."""
        engines = {id(s): self.engines.engine(s.clause.session) for s in batch}
        for slot in batch:
            clause = slot.clause
            if slot.k is not None and clause.job is None:
                engine = engines[id(slot)]
                args = (clause.pcm, clause.first_index, clause.before, clause.after)
                if engine.uses_phonemes:
                    clause.job = engine.prepare(*args, phonemes=clause.phonemes)
                else:
                    clause.job = engine.prepare(*args)
        images: dict[int, np.ndarray] = {}
        # One engine call per avatar in the batch: its sessions share the model call.
        for engine in {id(e): e for e in engines.values()}.values():
            talking = [s for s in batch if s.k is not None and engines[id(s)] is engine]
            for slot, image in zip(talking, engine.render([(s.clause.job, s.k) for s in talking]), strict=True):
                images[id(slot)] = image
        return [images[id(s)] if s.k is not None else engines[id(s)].idle_frame(s.index) for s in batch]

    async def _emit(self, batch: list[FrameSlot], images: list[np.ndarray]) -> None:
        self.batches = (self.batches + [len({s.clause.session for s in batch})])[-64:]
        for slot, image in zip(batch, images, strict=True):
            clause = slot.clause
            session, turn = clause.session, clause.turn
            flow = self._flows.get(session)
            if flow is None or self.turns.is_stale(session, turn):
                continue
            started = self._first_audio.pop((session, turn), None)
            if started is not None:
                ms = (time.monotonic() - started) * 1000
                logger.info("Session(%s) turn %d: lipsync first frame after %.0f ms", session, turn, ms)
                await self._events.send(messages.StageTiming(session, turn, "lipsync", "first_frame", ms))
                # What drives the mouth this turn: phoneme timing, loudness, or a model's own ear.
                if slot.k is not None:
                    mouth = clause.job.mouth if isinstance(clause.job, AnimationJob) else self._engine.name
                    await self._events.send(messages.StageNote(session, turn, "lipsync", "mouth", mouth))
            audio = _SILENCE if slot.k is None else _unit(clause.pcm, slot.k)
            await self._out.send(
                messages.AvatarFrame(session, turn, slot.index, image, audio, slot.text, slot.final)
            )
            flow.sent += 1

    async def _render_failed(self, batch: list[FrameSlot], exc: Exception) -> None:
        logger.error("lip-sync render failed: %s", exc, exc_info=exc)
        for clause in {id(s.clause): s.clause for s in batch}.values():
            if self.turns.is_stale(clause.session, clause.turn):
                continue
            await self._events.send(
                messages.StageError(clause.session, clause.turn, "lipsync", f"lip-sync failed: {exc}")
            )
            flow = self._flows.get(clause.session)
            if flow is None:
                continue
            # Skip the rest of the failed clause; the answer still ends (final) so the page
            # returns to listening.
            with contextlib.suppress(ValueError):
                flow.clauses.remove(clause)
            if clause.final:
                flow.clauses.appendleft(Clause.of(clause.session, clause.turn, "", True, clause.pcm[:0]))

    async def _send_text_only(self) -> None:
        """Sessions without media: their answer as text, now, with no rendering."""
        for session, flow in list(self._flows.items()):
            if not flow.credited or flow.media or not flow.clauses:
                continue
            while flow.clauses:
                clause = flow.clauses.popleft()
                # A clause cut off mid-way by lost media already sent the text of its rendered frames.
                text = " ".join(t for k, t in sorted(clause.texts.items()) if k >= clause.scheduled)
                if self.turns.is_stale(session, clause.turn) or not (text or clause.final):
                    continue
                await self._out.send(messages.AvatarText(session, clause.turn, text, clause.final))
                flow.next_index += clause.n_frames - clause.scheduled

    # --- lifetime ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        self.engines.shutdown()
        for task in [*self._avatar_tasks, *self._preparing.values()]:
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self, inbox: Receiver, control: Receiver) -> None:
        self._task = asyncio.create_task(self._schedule(), name="lipsync-schedule")
        await serve_stage("lipsync", self, messages.SpeechAudio, inbox, control, self, self._pool)


def _unit(pcm: np.ndarray, k: int) -> np.ndarray:
    unit = pcm[k * SAMPLES_PER_VIDEO_FRAME : (k + 1) * SAMPLES_PER_VIDEO_FRAME]
    if len(unit) < SAMPLES_PER_VIDEO_FRAME:
        unit = np.pad(unit, (0, SAMPLES_PER_VIDEO_FRAME - len(unit)))
    return np.ascontiguousarray(unit, dtype=np.int16)
