"""TTS fairness across sessions: step-by-step round robin, earliest playback deadline first.

The fake engine yields a known number of chunks of a known length per clause and records the
order of its steps; the clock is frozen so deadlines depend only on synthesized audio.
"""

import asyncio
import threading

import numpy as np

from services import messages as m
from services.tts.service import MAX_PENDING_CLAUSES, TtsService
from tests.fakes import RecordingSender


class StepEngine:
    """Yields ``chunks`` chunks per clause; a clause's first letter picks its chunk length.

    ``steps`` records "<text>#<chunk>" as each step runs (in the worker thread); ``closed`` the
    clauses whose generator was closed early. ``fail`` names clauses that raise at their
    first step; ``hold`` names one step that waits for ``release`` (to interrupt mid-answer).
    """

    name = "step-tts"

    def __init__(self, chunks: int = 3, samples: dict[str, int] | None = None, fail=(), hold=None) -> None:
        self.chunks = chunks
        self.samples = samples or {}
        self.fail = set(fail)
        self.hold = hold
        self.held = threading.Event()
        self.release = threading.Event()
        self.steps: list[str] = []
        self.closed: list[str] = []

    def synthesize(self, text: str):
        try:
            for i in range(self.chunks):
                step = f"{text}#{i}"
                self.steps.append(step)
                if text in self.fail:
                    raise RuntimeError(f"cannot say {text!r}")
                if step == self.hold:
                    self.held.set()
                    self.release.wait(5)
                yield np.full(self.samples.get(text[0], 160), 100, dtype=np.int16)
        except GeneratorExit:
            self.closed.append(text)
            raise


def _service(engine: StepEngine) -> tuple[TtsService, RecordingSender, RecordingSender]:
    out, events = RecordingSender(), RecordingSender()
    return TtsService(engine, out, events, clock=lambda: 0.0), out, events


async def _answer(svc: TtsService, session: str, clauses: int = 3, turn: int = 1) -> None:
    for i in range(clauses):
        await svc.handle(m.TextChunk(session, turn, i, f"{session}{i}", False))
    await svc.handle(m.TextChunk(session, turn, clauses, "", True))


def _finals(out: RecordingSender) -> set[str]:
    return {a.session for a in out.of(m.SpeechAudio) if a.final}


async def _until(pred, timeout_s: float = 5.0) -> None:
    async def wait() -> None:
        while not pred():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), timeout_s)


async def test_a_second_session_speaks_after_one_step_of_the_first_not_its_whole_answer():
    engine = StepEngine()
    svc, out, _ = _service(engine)
    await _answer(svc, "A")
    await _answer(svc, "B")
    await _until(lambda: _finals(out) == {"A", "B"})
    sessions = [a.session for a in out.of(m.SpeechAudio) if not a.final]
    assert sessions[:2] == ["A", "B"]
    # Equal chunks, so equal deadlines advance in lockstep: strict alternation throughout.
    assert sessions == ["A", "B"] * 9
    await svc.scheduler.aclose()


async def test_the_session_with_more_buffered_audio_yields_to_the_one_with_less():
    # A's chunks are 1 s of audio, B's 10 ms: after A's first chunk B can do all 9 of its
    # steps (90 ms in total) before its buffer would outlast A's.
    engine = StepEngine(samples={"A": 16_000, "B": 160})
    svc, out, _ = _service(engine)
    await _answer(svc, "A")
    await _answer(svc, "B")
    await _until(lambda: _finals(out) == {"A", "B"})
    sessions = [a.session for a in out.of(m.SpeechAudio) if not a.final]
    assert sessions == ["A"] + ["B"] * 9 + ["A"] * 8
    await svc.scheduler.aclose()


async def test_interrupting_one_session_drops_its_work_while_the_other_finishes():
    engine = StepEngine(hold="A1#0")
    svc, out, _ = _service(engine)
    await _answer(svc, "A")
    await _answer(svc, "B")
    await _until(engine.held.is_set)
    assert svc.turns.advance("A", 2)
    svc.on_interrupt(m.Interrupt("A", 2, barge_in=True))
    engine.release.set()
    await _until(lambda: _finals(out) == {"B"} and "A1" in engine.closed)
    await asyncio.sleep(0.05)
    assert _finals(out) == {"B"}  # A never ends its stale answer
    assert not any(step.startswith("A2") for step in engine.steps)
    a_texts = [a.text for a in out.of(m.SpeechAudio) if a.session == "A" and a.text]
    assert a_texts == ["A0"]  # the chunk in flight at the interrupt was discarded
    b_texts = [a.text for a in out.of(m.SpeechAudio) if a.session == "B" and a.text]
    assert b_texts == ["B0", "B1", "B2"]
    # A's next turn is served from a clean slate.
    await _answer(svc, "A", clauses=1, turn=2)
    await _until(lambda: "A" in _finals(out))
    await svc.scheduler.aclose()


async def test_a_failed_clause_reports_an_error_and_the_next_clause_still_speaks():
    engine = StepEngine(fail={"A1"})
    svc, out, events = _service(engine)
    await _answer(svc, "A")
    await _until(lambda: "A" in _finals(out))
    errors = events.of(m.StageError)
    assert [(e.session, e.turn, e.stage) for e in errors] == [("A", 1, "tts")]
    assert "cannot say" in errors[0].message
    audio = out.of(m.SpeechAudio)
    assert [a.text for a in audio if a.text] == ["A0", "A2"]
    assert [a.index for a in audio] == list(range(len(audio)))
    await svc.scheduler.aclose()


async def test_three_sessions_at_once_all_finish_in_order_within_each():
    engine = StepEngine(chunks=2)
    svc, out, events = _service(engine)
    for session in "ABC":
        await _answer(svc, session)
    await _until(lambda: _finals(out) == {"A", "B", "C"})
    for session in "ABC":
        audio = [a for a in out.of(m.SpeechAudio) if a.session == session]
        assert [a.index for a in audio] == list(range(7))  # 3 clauses x 2 chunks + final
        assert [a.text for a in audio] == [f"{session}0", "", f"{session}1", "", f"{session}2", "", ""]
        assert audio[-1].final and len(audio[-1].pcm) == 0
    # Every session's first audio came before any session's second clause.
    texts = [a.text for a in out.of(m.SpeechAudio) if a.text]
    assert set(texts[:3]) == {"A0", "B0", "C0"}
    assert {t.session for t in events.of(m.StageTiming) if t.name == "first_audio"} == {"A", "B", "C"}
    await svc.scheduler.aclose()


async def test_a_full_backlog_drops_the_extra_clause_with_an_error_but_still_ends_the_answer():
    engine = StepEngine(chunks=1)
    svc, out, events = _service(engine)
    # No await yields to the scheduler in between, so the backlog fills before any step.
    for i in range(MAX_PENDING_CLAUSES + 1):
        await svc.handle(m.TextChunk("A", 1, i, f"A{i}", False))
    await svc.handle(m.TextChunk("A", 1, MAX_PENDING_CLAUSES + 1, "", True))
    await _until(lambda: "A" in _finals(out))
    assert len(events.of(m.StageError)) == 2  # the extra clause and the end marker
    spoken = [a.text for a in out.of(m.SpeechAudio) if a.text]
    assert spoken == [f"A{i}" for i in range(MAX_PENDING_CLAUSES)]
    assert out.of(m.SpeechAudio)[-1].final
    await svc.scheduler.aclose()


class QueueReceiver:
    """Stands in for a ZeroMQ PULL/SUB socket."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()

    async def recv(self) -> object:
        return await self.queue.get()


async def test_run_serves_until_cancelled_and_a_closed_session_stops_mid_clause():
    engine = StepEngine(hold="A0#1")
    svc, out, _ = _service(engine)
    inbox, control = QueueReceiver(), QueueReceiver()
    task = asyncio.create_task(svc.run(inbox, control))
    for i, text in enumerate(["A0", "A1", ""]):
        inbox.queue.put_nowait(m.TextChunk("A", 1, i, text, text == ""))
    await _until(engine.held.is_set)
    control.queue.put_nowait(m.SessionClosed("A"))
    await _until(lambda: svc.turns.is_closed("A"))
    engine.release.set()
    await _until(lambda: "A0" in engine.closed)
    assert [a.text for a in out.of(m.SpeechAudio)] == ["A0"]  # nothing after the close
    inbox.queue.put_nowait(m.TextChunk("B", 1, 0, "", True))
    await _until(lambda: _finals(out) == {"B"})
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_with_a_lead_limit_a_later_clause_waits_so_another_sessions_first_clause_goes_first():
    """Real clock. A's first clause is 0.5 s of voice; with at most 0.2 s of lead, A's second
    clause waits until A's voice reaches less than 0.2 s ahead (0.3 s after its first audio).
    B's first clause, arriving 50 ms after A's first audio, is synthesized before it."""
    engine = StepEngine(chunks=1, samples={"A": 8000, "B": 1600})
    out, events = RecordingSender(), RecordingSender()
    svc = TtsService(engine, out, events, max_lead_s=0.2)
    loop = asyncio.get_running_loop()
    await _answer(svc, "A", clauses=2)
    await _until(lambda: "A0#0" in engine.steps)
    first_audio = loop.time()
    await asyncio.sleep(0.05)
    await _answer(svc, "B", clauses=1)
    await _until(lambda: "A1#0" in engine.steps, timeout_s=5)
    second_at = loop.time()
    await _until(lambda: {"A", "B"} <= _finals(out), timeout_s=5)
    assert engine.steps == ["A0#0", "B0#0", "A1#0"]
    # A's second clause came once its lead fell to 0.2 s (0.3 s after its first audio), well
    # before A's voice ran out (0.5 s): no gap, and no synthesis that far ahead.
    assert 0.25 <= second_at - first_audio < 0.5
    await svc.scheduler.aclose()


async def test_the_lead_limit_comes_from_the_settings_and_zero_turns_it_off():
    from services.tts.settings import TtsSettings

    assert TtsSettings.from_env({}).max_lead_s == 0.5
    assert TtsSettings.from_env({"AVATAR_TTS_MAX_LEAD_MS": "0"}).max_lead_s is None
    assert TtsSettings.from_env({"AVATAR_TTS_MAX_LEAD_MS": "1200"}).max_lead_s == 1.2
