"""LLM, TTS and lip-sync stages on fake engines: streaming, ordering, staleness, barge-in."""

import json

import asyncio
import threading

import numpy as np

from services import messages as m
from services.lipsync.service import LipsyncService
from services.media import audio_units
from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from services.tts.service import TtsService
from tests.fakes import FakeLipsync, FakeLlm, FakeTts, RecordingSender


async def _until(pred, timeout_s=5.0):
    async def wait():
        while not pred():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), timeout_s)


async def test_llm_streams_clauses_then_a_final_marker():
    out, events = RecordingSender(), RecordingSender()
    svc = LlmService(FakeLlm(), LlmSettings(min_clause_chars=5, max_sentences=0), out, events)
    await svc.handle(m.UserText("s", 1, "hi", "speech", 0.0))
    await _until(lambda: any(c.final for c in out.of(m.TextChunk)))
    chunks = out.of(m.TextChunk)
    assert [c.text for c in chunks] == ["Hello there,", "friend.", "How are you today?", "Fine.", ""]
    assert [c.index for c in chunks] == list(range(5))
    assert {t.name for t in events.of(m.StageTiming)} == {"first_token", "first_clause"}
    await svc._lanes.aclose()


async def test_llm_stops_generating_on_interrupt_and_answers_with_the_history_it_is_sent():
    gate = threading.Event()
    engine = FakeLlm("One two three, four five six seven eight nine ten.", gate=gate)
    out, events = RecordingSender(), RecordingSender()
    svc = LlmService(engine, LlmSettings(min_clause_chars=5), out, events)
    await svc.handle(m.UserText("s", 1, "count", "speech", 0.0))
    await _until(lambda: len(out.of(m.TextChunk)) >= 1)
    assert svc.turns.advance("s", 2)
    svc.on_interrupt(m.Interrupt("s", 2, "One two three,", True))
    gate.set()
    await _until(lambda: engine.stopped)
    await asyncio.sleep(0.05)
    assert not any(c.final for c in out.of(m.TextChunk))  # no more output for the stale turn
    # The next question carries the conversation (the gateway's, holding only what was heard):
    # the stage keeps none of its own, so a restarted LLM answers the same way.
    history = json.dumps([{"role": "user", "content": "count"}, {"role": "assistant", "content": "One two three, ..."}])
    await svc.handle(m.UserText("s", 2, "go on", "speech", 0.0, history))
    await _until(lambda: len(engine.prompts) == 2)
    assert [(p["role"], p["content"]) for p in engine.prompts[1][1:]] == [
        ("user", "count"), ("assistant", "One two three, ..."), ("user", "go on")
    ]
    await svc._lanes.aclose()


async def test_llm_drops_stale_input():
    out, events = RecordingSender(), RecordingSender()
    svc = LlmService(FakeLlm(), LlmSettings(), out, events)
    svc.turns.advance("s", 5)
    await svc.handle(m.UserText("s", 4, "old", "speech", 0.0))
    await asyncio.sleep(0.05)
    assert out.sent == []


async def test_tts_speaks_clauses_in_order_with_text_on_the_first_chunk():
    out, events = RecordingSender(), RecordingSender()
    svc = TtsService(FakeTts(), out, events)
    await svc.handle(m.TextChunk("s", 1, 0, "Hello there.", False))
    await svc.handle(m.TextChunk("s", 1, 1, "Bye now.", False))
    await svc.handle(m.TextChunk("s", 1, 2, "", True))
    await _until(lambda: any(a.final for a in out.of(m.SpeechAudio)))
    audio = out.of(m.SpeechAudio)
    assert [a.text for a in audio] == ["Hello there.", "", "Bye now.", "", ""]
    assert [a.index for a in audio] == list(range(5))
    assert audio[-1].final and len(audio[-1].pcm) == 0
    assert all(a.pcm.dtype == np.int16 for a in audio)
    assert events.of(m.StageTiming)[0].name == "first_audio"
    await svc.scheduler.aclose()


async def test_tts_drops_queued_clauses_on_interrupt():
    out, events = RecordingSender(), RecordingSender()
    tts = FakeTts()
    svc = TtsService(tts, out, events)
    for i in range(20):
        await svc.handle(m.TextChunk("s", 1, i, f"clause number {i}.", False))
    svc.turns.advance("s", 2)
    svc.on_interrupt(m.Interrupt("s", 2))
    await asyncio.sleep(0.1)
    assert len(tts.texts) < 20
    assert all(a.turn == 1 for a in out.of(m.SpeechAudio))
    await svc.scheduler.aclose()


def test_audio_units_are_640_samples_and_pad_the_tail():
    units = audio_units(np.ones(1500, np.int16))
    assert [len(u) for u in units] == [640, 640, 640]
    assert units[-1][:220].all() and not units[-1][220:].any()


async def test_lipsync_emits_one_frame_per_640_samples_with_the_audio_under_it():
    out, events = RecordingSender(), RecordingSender()
    svc = LipsyncService(FakeLipsync(), out, events)
    task = asyncio.create_task(svc._schedule())
    svc.on_credit(m.FlowCredit("s", 1, 0, 100, True))
    pcm = np.arange(1600, dtype=np.int16)
    await svc.handle(m.SpeechAudio("s", 1, 0, "Hello.", pcm, False))
    await svc.handle(m.SpeechAudio("s", 1, 1, "", np.zeros(0, np.int16), True))
    await _until(lambda: any(f.final for f in out.of(m.AvatarFrame)))
    frames = out.of(m.AvatarFrame)
    # The voice is one stream: the short clause waits for the end of the answer, whose empty
    # chunk ends it, so the last frame carries both the voice's tail and the end marker.
    assert len(frames) == 3
    audio = np.concatenate([f.audio for f in frames])
    np.testing.assert_array_equal(audio[:1600], pcm)
    assert not audio[1600:].any()
    assert frames[0].text == "Hello." and frames[1].text == ""
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[-1].final and not any(f.final for f in frames[:-1])
    assert events.of(m.StageTiming)[0].name == "first_frame"
    task.cancel()


async def test_lipsync_stops_a_stale_turn():
    out, events = RecordingSender(), RecordingSender()
    svc = LipsyncService(FakeLipsync(), out, events)
    task = asyncio.create_task(svc._schedule())
    svc.on_credit(m.FlowCredit("s", 1, 0, 20, True))
    await svc.handle(m.SpeechAudio("s", 1, 0, "Long.", np.ones(640 * 200, np.int16), False))
    await _until(lambda: len(out.of(m.AvatarFrame)) == 20)
    svc.turns.advance("s", 2)
    svc.on_interrupt(m.Interrupt("s", 2))
    svc.on_credit(m.FlowCredit("s", 2, 20, 1000, True))  # room again: nothing stale may use it
    await asyncio.sleep(0.05)
    n = len(out.of(m.AvatarFrame))
    await asyncio.sleep(0.05)
    assert len(out.of(m.AvatarFrame)) == n < 200
    task.cancel()
