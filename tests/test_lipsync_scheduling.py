"""Lip-sync renders per session within flow credit, earliest deadline first, and batches
frames of several sessions into one engine call; a session without media costs nothing."""

import asyncio

import numpy as np
import pytest

from services import messages as m
from services.lipsync.schedule import Clause, SessionFlow, pick_batch
from services.lipsync.service import LipsyncService
from tests.fakes import FakeLipsync, RecordingSender


async def _until(cond, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.fixture
async def lipsync():
    out, events = RecordingSender(), RecordingSender()
    engine = FakeLipsync()
    svc = LipsyncService(engine, out, events)
    task = asyncio.create_task(svc._schedule())
    yield svc, engine, out, events
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _speech(session: str, seconds: float, turn: int = 1, final: bool = True, text: str = "Hi.") -> m.SpeechAudio:
    return m.SpeechAudio(session, turn, 0, text, np.ones(int(16000 * seconds), np.int16), final)


def _frames(out: RecordingSender, session: str) -> list[m.AvatarFrame]:
    return [f for f in out.of(m.AvatarFrame) if f.session == session]


async def test_nothing_renders_before_credit_and_never_beyond_it(lipsync):
    svc, engine, out, _ = lipsync
    await svc.handle(_speech("a", 2.0))
    await asyncio.sleep(0.05)
    assert out.sent == [] and engine.batches == []
    svc.on_credit(m.FlowCredit("a", 1, 0, 5, True))
    await _until(lambda: len(_frames(out, "a")) == 5)
    await asyncio.sleep(0.05)
    assert len(_frames(out, "a")) == 5
    # The gateway received those 5 and has room for 5 more: a window of 10 in all.
    svc.on_credit(m.FlowCredit("a", 1, 5, 5, True))
    await _until(lambda: len(_frames(out, "a")) == 10)
    await asyncio.sleep(0.05)
    assert [f.index for f in _frames(out, "a")] == list(range(10))


async def test_one_engine_call_carries_frames_of_several_sessions(lipsync):
    svc, engine, out, _ = lipsync
    for sid in ("a", "b", "c"):
        svc.on_credit(m.FlowCredit(sid, 1, 0, 5, True))
        await svc.handle(_speech(sid, 1.0))
    await _until(lambda: all(len(_frames(out, s)) == 5 for s in "abc"))
    first = engine.batches[0]
    assert len(first) == engine.max_batch
    assert {job.first_index for job, _ in first} == {0}
    assert max(svc.batches) == 3  # some call rendered for all three sessions at once
    for sid in "abc":
        assert [f.index for f in _frames(out, sid)] == list(range(5))
        assert _frames(out, sid)[0].text == "Hi."


async def test_a_stalled_session_never_delays_another(lipsync):
    svc, _engine, out, _ = lipsync
    # "stalled" has media but its viewer stopped draining: its credit is used up.
    svc.on_credit(m.FlowCredit("stalled", 1, 0, 3, True))
    await svc.handle(_speech("stalled", 5.0))
    await _until(lambda: len(_frames(out, "stalled")) == 3)
    svc.on_credit(m.FlowCredit("live", 1, 0, 200, True))
    await svc.handle(_speech("live", 4.0))
    await _until(lambda: any(f.final for f in _frames(out, "live")))
    assert len(_frames(out, "live")) == 100
    assert len(_frames(out, "stalled")) == 3


async def test_a_session_without_media_gets_text_at_once_and_no_rendering(lipsync):
    svc, engine, out, _ = lipsync
    svc.on_credit(m.FlowCredit("ws", 1, 0, 0, False))
    await svc.handle(_speech("ws", 3.0, final=False, text="Paris is the capital."))
    await svc.handle(m.SpeechAudio("ws", 1, 1, "", np.zeros(0, np.int16), True))
    await _until(lambda: any(t.final for t in out.of(m.AvatarText)))
    texts = out.of(m.AvatarText)
    assert [(t.text, t.final) for t in texts] == [("Paris is the capital.", False), ("", True)]
    assert engine.batches == [] and out.of(m.AvatarFrame) == []


async def test_barge_in_drops_the_session_and_spares_the_other(lipsync):
    svc, _engine, out, _ = lipsync
    for sid in ("a", "b"):
        svc.on_credit(m.FlowCredit(sid, 1, 0, 10, True))
        await svc.handle(_speech(sid, 4.0))
    await _until(lambda: len(_frames(out, "a")) == 10 and len(_frames(out, "b")) == 10)
    svc.turns.advance("a", 2)
    svc.on_interrupt(m.Interrupt("a", 2))
    for sid in ("a", "b"):
        svc.on_credit(m.FlowCredit(sid, 2 if sid == "a" else 1, 10, 200, True))
    await _until(lambda: any(f.final for f in _frames(out, "b")))
    await asyncio.sleep(0.05)
    assert len(_frames(out, "a")) == 10 and len(_frames(out, "b")) == 100


async def test_a_failed_render_is_reported_and_the_answer_still_ends(lipsync):
    svc, engine, out, events = lipsync
    engine.fail_next = True
    svc.on_credit(m.FlowCredit("a", 1, 0, 100, True))
    await svc.handle(_speech("a", 1.0))
    await _until(lambda: any(f.final for f in _frames(out, "a")))
    [error] = events.of(m.StageError)
    assert error.stage == "lipsync" and "render exploded" in error.message
    # Then the service still works for the next turn.
    await svc.handle(_speech("a", 0.4, turn=2))
    await _until(lambda: sum(f.final for f in _frames(out, "a")) == 2)


async def test_a_restarted_lipsync_realigns_to_the_gateway_count(lipsync):
    svc, _engine, out, _ = lipsync
    # The gateway has received 500 frames from the previous lip-sync process already.
    svc.on_credit(m.FlowCredit("a", 1, 500, 4, True))
    await svc.handle(_speech("a", 2.0))
    await _until(lambda: len(_frames(out, "a")) == 4)
    await asyncio.sleep(0.05)
    assert len(_frames(out, "a")) == 4  # not 504


def test_pick_batch_serves_the_emptiest_queue_first_and_round_robin():
    flows = {"full": SessionFlow(), "empty": SessionFlow()}
    for sid, room in (("full", 1), ("empty", 5)):
        flows[sid].apply_credit(0, room, True)
        flows[sid].clauses.append(Clause.of(sid, 1, "x", True, np.ones(640 * 10, np.int16)))
    batch = pick_batch(flows, 4)
    assert [s.clause.session for s in batch] == ["empty", "full", "empty", "empty"]
    assert [s.index for s in batch if s.clause.session == "empty"] == [0, 1, 2]
