"""The LLM stage: user text in, clause-sized TextChunks out, streamed as they are generated."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable

from services import messages
from services.control import serve_stage
from services.lanes import SessionLanes, iterate_in_thread
from services.llm.calculator import annotate
from services.llm.clauses import ClauseSplitter
from services.llm.engine import LlmEngine
from services.llm.few_shot import example_messages
from services.llm.history import build_prompt, parse_history
from services.llm.settings import LlmSettings
from services.llm.speakable import persona_name
from services.transport import Receiver, Sender
from services.turns import TurnTracker

logger = logging.getLogger(__name__)


class LlmService:
    def __init__(self, engine: LlmEngine, settings: LlmSettings, out: Sender, events: Sender) -> None:
        self._engine = engine
        self._settings = settings
        self._out = out
        self._events = events
        self.turns = TurnTracker()
        # Taken off the front of answers ("Ava: ..."): the persona names the avatar.
        self._name = persona_name(settings.persona)
        self._examples = example_messages() if settings.few_shot else None
        self._lanes: SessionLanes[messages.UserText] = SessionLanes("llm", self._answer, maxsize=4)
        # Generation itself runs on the engine's thread(s); this pool only waits for each
        # stream's next piece, so it must never be what makes one session wait for another:
        # one thread per admitted session for its answer, plus one for the last step of an
        # interrupted answer that is still leaving.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            2 * settings.max_sessions, thread_name_prefix="llm-stream"
        )

    async def handle(self, msg: messages.UserText) -> None:
        if self.turns.is_stale(msg.session, msg.turn):
            logger.debug("Session(%s) dropped stale text of turn %d", msg.session, msg.turn)
            return
        if self.turns.advance(msg.session, msg.turn):
            self._lanes.interrupt(msg.session)
        # Never waits (the inbox serves every session): a newer turn emptied the lane above, so
        # it is full only of this turn's repeats, and the oldest of those gives way.
        dropped = self._lanes.offer(msg.session, msg)
        if dropped is not None:
            logger.warning("Session(%s) turn %d: too many questions queued, dropped %r", msg.session, msg.turn, dropped.text)

    def on_interrupt(self, msg: messages.Interrupt) -> None:
        self._lanes.interrupt(msg.session)

    def on_close(self, session: str) -> None:
        self._lanes.close(session)

    async def _answer(self, msg: messages.UserText) -> None:
        session, turn = msg.session, msg.turn
        budget = max(64, min(self._settings.prompt_tokens, self._engine.context_tokens - self._settings.max_new_tokens))
        # The conversation comes with the question (the gateway owns it): nothing kept here.
        history = parse_history(msg.history)
        # Only this turn's prompt gets the result; the gateway's history keeps the question as asked.
        question = annotate(msg.text) if self._settings.calculator else msg.text
        chat = build_prompt(self._settings.persona, history, question, self._engine.count_tokens, budget,
                            examples=self._examples)
        # Shows that the gateway's history arrived and was used (a restarted LLM has nothing else).
        logger.info(
            "Session(%s) turn %d: llm request with %d history messages (%d in the prompt)",
            session, turn, len(history), len(chat) - 2 - len(self._examples or ()),
        )

        def stale() -> bool:
            return self.turns.is_stale(session, turn)

        splitter = ClauseSplitter(self._settings.min_clause_chars, first_words=self._settings.first_clause_words,
                                  name=self._name, max_sentences=self._settings.max_sentences)
        index = 0
        started = time.monotonic()
        first_token = True
        loop = asyncio.get_running_loop()
        stream = self._engine.stream(chat, stale)
        # A slow server (or a busy CPU) gets a clear "slow" on the page instead of silence.
        watchdog = asyncio.create_task(self._report_slow(session, turn, stale))
        try:
            async for piece in iterate_in_thread(loop, self._pool, stream, stale):
                if first_token:
                    first_token = False
                    watchdog.cancel()
                    await self._timing(session, turn, "first_token", started)
                    await self._events.send(messages.LlmStatus(session, turn, self._model_name(), "answering"))
                for clause in splitter.feed(piece):
                    if index == 0:
                        await self._timing(session, turn, "first_clause", started)
                    await self._out.send(messages.TextChunk(session, turn, index, clause, False))
                    index += 1
                if splitter.done:
                    break  # closing the stream (finally) stops generation
            if stale():
                return
            for clause in splitter.flush():
                if index == 0:  # a one-clause answer leaves only now
                    await self._timing(session, turn, "first_clause", started)
                await self._out.send(messages.TextChunk(session, turn, index, clause, False))
                index += 1
            await self._out.send(messages.TextChunk(session, turn, index, "", True))
            logger.info(
                "Session(%s) turn %d: %d clauses in %.0f ms", session, turn, index,
                (time.monotonic() - started) * 1000,
            )
        except Exception as exc:
            logger.exception("Session(%s) turn %d: generation failed", session, turn)
            await self._events.send(messages.StageError(session, turn, "llm", f"LLM failed: {exc}"))
            await self._out.send(messages.TextChunk(session, turn, index, "", True))
        finally:
            watchdog.cancel()
            # Closing the generator takes the request out of the engine's batch. If a step is
            # still running in the pool (we were cancelled mid-step), that step sees the stale
            # turn and finishes by itself within one decode step.
            with contextlib.suppress(ValueError):
                await loop.run_in_executor(self._pool, stream.close)

    def _model_name(self) -> str:
        return str(getattr(self._engine, "model_name", "") or self._engine.name)

    async def _report_slow(self, session: str, turn: int, stale: Callable[[], bool]) -> None:
        """Owned by one answer and cancelled with it (or by its first token)."""
        await asyncio.sleep(self._settings.slow_s)
        if not stale():
            model = self._model_name()
            logger.warning("Session(%s) turn %d: no token from %s after %.0f s", session, turn, model, self._settings.slow_s)
            await self._events.send(messages.LlmStatus(
                session, turn, model, "slow",
                f"The language model ({model}) has not answered for {self._settings.slow_s:.0f} s; still waiting.",
            ))

    async def _timing(self, session: str, turn: int, name: str, started: float) -> None:
        ms = (time.monotonic() - started) * 1000
        logger.info("Session(%s) turn %d: llm %s after %.0f ms", session, turn, name, ms)
        await self._events.send(messages.StageTiming(session, turn, "llm", name, ms))

    async def run(self, inbox: Receiver, control: Receiver) -> None:
        await serve_stage("llm", self, messages.UserText, inbox, control, self._lanes, self._pool)
