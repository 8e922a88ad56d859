"""Fair synthesis across sessions: one worker thread, one step at a time, earliest deadline first.

The TTS model is shared and runs in a single worker thread, so sessions compete for it. Serving
whole answers in arrival order makes a second session's first audio wait for the first
session's entire answer. Instead the scheduler runs one *step* at a time (one chunk out of the
engine's generator for one clause) and, after every step, picks the session whose listener will
run out of audio first:

    deadline(session) = first_audio_at + audio_s   once the turn has produced audio
                      = now                         before its first audio (most urgent)

``first_audio_at`` is when the session's first chunk of its current turn came out of the
engine and ``audio_s`` the seconds of audio synthesized for that turn since: if played in real
time from its first chunk, that is when the session's buffer runs dry. A session whose buffer
already ran dry has a deadline in the past and goes before a fresh one. Ties go to the session
whose turn arrived first. Each session keeps its own in-progress generator, so an unfinished
clause of one session resumes after another session's step.

**Lead limit** (``max_lead_s``, optional): a session whose synthesized audio already reaches
more than ``max_lead_s`` past now is not stepped until it reaches less; meanwhile the worker
waits for it, or for another session's clause. Steps cannot be preempted, so without the
limit a session's second clause, the only work at hand for a moment, took the worker just
before other sessions' first clauses arrived, and they waited for it (measured with three
sessions asking at once on 2 cores: the third's first audio came 240-350 ms after its clause,
against 60-80 ms alone). The first clause of a turn is always due at once. Waiting also leaves
the CPU to the stages still working on other sessions' first clauses.

Why one clause per engine call, not several sessions' due clauses batched into one onnxruntime
run: Piper accepts a batch, but on one CPU thread it costs in proportion to the (padded) audio,
0.98-1.15x the same clauses in a row, and every item waits for the batch's end (docs/latency.md,
"Batching Piper across sessions").

Invariants: only the scheduler task touches the engine, always through the one-thread pool, so
steps and generator closes never overlap; a step whose clause was dropped meanwhile (interrupt,
close) is discarded, never sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from services.media import SAMPLE_RATE
from services.messages import TextChunk
from services.tts.engine import TimedVoice, voice_pcm

logger = logging.getLogger(__name__)


class SpeechSink(Protocol):
    """Where the scheduler's results go (the TTS service turns them into messages)."""

    async def on_audio(self, clause: TextChunk, pcm: np.ndarray | TimedVoice, first: bool) -> None:
        """One chunk of ``clause``'s voice (as the engine yielded it); ``first`` on the clause's
        first chunk."""

    async def on_failure(self, clause: TextChunk, exc: Exception) -> None:
        """The engine raised while synthesizing ``clause``; the clause ends there."""

    async def on_clause_done(self, clause: TextChunk) -> None:
        """``clause`` is finished (spoken, failed, or empty); sent in order per session."""


@dataclass(slots=True)
class _Clause:
    chunk: TextChunk
    # Created and advanced in the worker thread only.
    iterator: Iterator[np.ndarray | TimedVoice] | None = None
    spoken: bool = False  # its first audio has gone out (the text travels with that one)


@dataclass(slots=True)
class _Voice:
    """One session's queue, its clause in progress, and its playback deadline bookkeeping."""

    pending: deque[TextChunk] = field(default_factory=deque)
    current: _Clause | None = None
    turn: int = -1  # the turn the deadline bookkeeping below is about
    arrival: int = 0  # tie-break: when that turn's first clause arrived
    first_audio_at: float | None = None
    audio_s: float = 0.0

    def busy(self) -> bool:
        return self.current is not None or bool(self.pending)

    def deadline(self, now: float) -> float:
        return now if self.first_audio_at is None else self.first_audio_at + self.audio_s

    def forget_turn(self) -> None:
        self.turn, self.first_audio_at, self.audio_s = -1, None, 0.0


class SpeechScheduler:
    """Per-session clause queues served by one owned task, one engine step at a time.

    ``submit`` never blocks: a session with ``max_pending`` clauses queued gets the next one
    refused (``submit`` returns False; the caller reports it), so one runaway session can
    neither block nor starve the others.
    """

    def __init__(
        self,
        synthesize: Callable[[str], Iterable[np.ndarray | TimedVoice]],
        sink: SpeechSink,
        pool: concurrent.futures.Executor,
        max_pending: int = 64,
        clock: Callable[[], float] = time.monotonic,
        max_lead_s: float | None = None,
    ) -> None:
        self._synthesize = synthesize
        self._max_lead_s = max_lead_s
        self._sink = sink
        self._pool = pool
        self._max_pending = max_pending
        self._clock = clock
        self._voices: dict[str, _Voice] = {}
        self._arrivals = itertools.count()
        # Generators of dropped clauses, closed by the scheduler task in the worker thread:
        # closing one from here could hit it mid-step ("generator already executing").
        self._to_close: list[_Clause] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def submit(self, clause: TextChunk) -> bool:
        """Queue ``clause`` behind its session's others; False when refused (the session's
        backlog is full, or the scheduler is closed).

        A refused final clause still ends the answer: its final flag moves onto the last
        queued clause, so the session's listener is told the answer is over.
        """
        if self._closed:
            return False
        voice = self._voices.setdefault(clause.session, _Voice())
        if voice.turn != clause.turn:
            voice.forget_turn()
            voice.turn, voice.arrival = clause.turn, next(self._arrivals)
        if len(voice.pending) >= self._max_pending:
            if clause.final:
                voice.pending[-1] = dataclasses.replace(voice.pending[-1], final=True)
            return False
        voice.pending.append(clause)
        if self._task is None:
            self._task = asyncio.create_task(self._serve(), name="tts-scheduler")
        self._wake.set()
        return True

    def interrupt(self, session: str) -> None:
        """Drop ``session``'s queued clauses and its clause in progress (its generator is
        closed in the worker thread); the session's next clause starts a fresh deadline."""
        voice = self._voices.get(session)
        if voice is None:
            return
        voice.pending.clear()
        if voice.current is not None:
            self._to_close.append(voice.current)
            voice.current = None
            self._wake.set()
        voice.forget_turn()

    def close(self, session: str) -> None:
        self.interrupt(session)
        self._voices.pop(session, None)

    def pending(self, session: str) -> int:
        voice = self._voices.get(session)
        return 0 if voice is None else len(voice.pending)

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Stop the scheduler task, then close what generators are left in the worker thread,
        all within ``timeout_s``."""
        self._closed = True
        for session in list(self._voices):
            self.close(session)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout_s)
        with contextlib.suppress(asyncio.TimeoutError, RuntimeError):
            await asyncio.wait_for(self._close_dropped(), timeout_s)

    def _pick(self) -> tuple[_Voice | None, float | None]:
        """The voice to step now; else None and how long until one is due (None: no work)."""
        now = self._clock()
        busy = [v for v in self._voices.values() if v.busy()]
        for v in busy:
            if v.current is None and not v.pending[0].text:
                return v, 0.0  # a bare end-of-answer marker: no engine work, never held back
        voice = min(busy, key=lambda v: (v.deadline(now), v.arrival), default=None)
        if voice is None:
            return None, None
        if self._max_lead_s is not None:
            wait = voice.deadline(now) - self._max_lead_s - now
            if wait > 0:
                return None, wait
        return voice, 0.0

    async def _serve(self) -> None:
        while True:
            await self._close_dropped()
            voice, wait = self._pick()
            if voice is None:
                self._wake.clear()
                # A new clause (or an interrupt) wakes the worker early.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            try:
                await self._step(voice)
            except Exception:
                # The sink reports engine errors itself; this only keeps a failed send (or a
                # bug) from ending synthesis for every session.
                logger.exception("tts scheduler step failed")

    async def _step(self, voice: _Voice) -> None:
        if voice.current is None:
            chunk = voice.pending.popleft()
            if not chunk.text:
                await self._sink.on_clause_done(chunk)  # a bare end marker needs no engine
                return
            voice.current = _Clause(chunk)
        clause = voice.current
        loop = asyncio.get_running_loop()
        try:
            pcm = await loop.run_in_executor(self._pool, self._advance, clause)
        except Exception as exc:
            if voice.current is clause:  # else it was dropped meanwhile: nothing to report
                voice.current = None
                await self._sink.on_failure(clause.chunk, exc)
                await self._sink.on_clause_done(clause.chunk)
            return
        if voice.current is not clause:
            return  # interrupted or closed during the step; the generator is queued to close
        if pcm is None:
            voice.current = None
            await self._sink.on_clause_done(clause.chunk)
            return
        if voice.first_audio_at is None:
            voice.first_audio_at = self._clock()
        voice.audio_s += len(voice_pcm(pcm)) / SAMPLE_RATE
        first, clause.spoken = not clause.spoken, True
        await self._sink.on_audio(clause.chunk, pcm, first)

    def _advance(self, clause: _Clause) -> np.ndarray | TimedVoice | None:
        """One engine step, in the worker thread: the clause's next chunk, None when done."""
        if clause.iterator is None:
            clause.iterator = iter(self._synthesize(clause.chunk.text))
        return next(clause.iterator, None)

    async def _close_dropped(self) -> None:
        loop = asyncio.get_running_loop()
        while self._to_close:
            clause = self._to_close.pop()
            try:
                await loop.run_in_executor(self._pool, _close, clause)
            except Exception:
                logger.exception("Session(%s): closing a dropped synthesis failed", clause.chunk.session)


def _close(clause: _Clause) -> None:
    """Close a dropped clause's generator, in the worker thread (after any step in flight)."""
    if isinstance(clause.iterator, Generator):
        clause.iterator.close()
