"""Streaming TTS without holes: the chunks of a clause are lip-synced as one continuous stream.

XTTS streams ~20 GPT tokens a chunk, cut anywhere. Lip-sync carries the remainder (the part of
a 640-sample frame a chunk ends in) and the look-ahead (Wav2Lip's 200 ms window) across chunks,
so no frame inside a clause is zero-padded and no frame's window sees invented silence.
"""

import asyncio

import numpy as np

from services import messages as m
from services.lipsync.service import LipsyncService
from services.lipsync.voice_stream import HOLD_FRAMES, VoiceStream
from tests.fakes import FakeLipsync, RecordingSender
from tests.test_wav2lip_engine import _speech, checkpoint, engine  # noqa: F401 (fixtures)

# Chunk sizes as XTTS makes them (20 tokens is ~0.25-0.35 s at 24 kHz, resampled to 16 kHz):
# none is a whole number of 640-sample frames.
XTTS_CHUNKS = [4_437, 5_203, 3_911, 6_007, 4_781]


def _voice(n: int) -> np.ndarray:
    # Never zero, so a zero-padded unit shows.
    return (1000 + (np.arange(n) % 997)).astype(np.int16)


def _chunks(pcm: np.ndarray) -> list[np.ndarray]:
    bounds = np.cumsum([0] + XTTS_CHUNKS)
    return [pcm[a:b] for a, b in zip(bounds, bounds[1:])]


def test_the_stream_is_cut_into_whole_frames_with_real_context_around_each_piece():
    pcm = _voice(sum(XTTS_CHUNKS))
    stream = VoiceStream("s")
    clauses = []
    for i, chunk in enumerate(_chunks(pcm)):
        clauses += stream.feed(1, "It is sunny today." if i == 0 else "", chunk, final=False)
    clauses += stream.feed(1, "", pcm[:0], final=True)
    np.testing.assert_array_equal(np.concatenate([c.pcm for c in clauses]), pcm)
    # Only the end of the answer may end inside a frame.
    assert all(len(c.pcm) % 640 == 0 for c in clauses[:-1]) and clauses[-1].final
    for c in clauses[:-1]:
        assert c.after is not None and len(c.after) >= HOLD_FRAMES * 640  # real look-ahead
    assert all(c.before is not None for c in clauses[1:])  # real look-behind
    assert clauses[0].texts == {0: "It is sunny today."}


async def test_no_zero_padded_frame_inside_a_streamed_clause():
    out, events = RecordingSender(), RecordingSender()
    engine_ = FakeLipsync()
    svc = LipsyncService(engine_, out, events)
    task = asyncio.create_task(svc._schedule())
    svc.on_credit(m.FlowCredit("s", 1, 0, 1000, True))
    pcm = _voice(sum(XTTS_CHUNKS))
    for i, chunk in enumerate(_chunks(pcm)):
        await svc.handle(m.SpeechAudio("s", 1, i, "Hello." if i == 0 else "", chunk, False))
    await svc.handle(m.SpeechAudio("s", 1, len(XTTS_CHUNKS), "", pcm[:0], True))
    try:
        await asyncio.wait_for(_until_final(out), 3)
    finally:
        task.cancel()
    frames = out.of(m.AvatarFrame)
    assert len(frames) == -(-len(pcm) // 640)
    audio = np.concatenate([f.audio for f in frames])
    np.testing.assert_array_equal(audio[: len(pcm)], pcm)  # every sample, in order, no gap
    assert all(f.audio.all() for f in frames[:-1])  # no zero-padded unit before the end
    assert [f.index for f in frames] == list(range(len(frames)))
    assert frames[0].text == "Hello." and frames[-1].final
    assert all(after for _, after in engine_.contexts[:-1])  # each piece saw what follows it


async def test_a_late_chunk_does_not_hold_the_tail_back_for_long():
    out, events = RecordingSender(), RecordingSender()
    svc = LipsyncService(FakeLipsync(), out, events)
    task = asyncio.create_task(svc._schedule())
    svc.on_credit(m.FlowCredit("s", 1, 0, 1000, True))
    await svc.handle(m.SpeechAudio("s", 1, 0, "Hi.", _voice(4 * 640 + 100), False))
    try:
        # The next chunk never comes (slow synthesis): the held frames go out anyway.
        for _ in range(100):
            if len(out.of(m.AvatarFrame)) == 5:
                break
            await asyncio.sleep(0.01)
        assert len(out.of(m.AvatarFrame)) == 5
    finally:
        task.cancel()


def test_wav2lip_windows_of_a_streamed_clause_equal_those_of_the_whole(engine):  # noqa: F811
    pcm = _speech(sum(XTTS_CHUNKS))
    stream = VoiceStream("s")
    clauses = []
    for chunk in _chunks(pcm):
        clauses += stream.feed(1, "", chunk, final=False)
    clauses += stream.feed(1, "", pcm[:0], final=True)
    whole = engine.prepare(pcm, 0)
    pieces = []
    index = 0
    for c in clauses:
        pieces.append(engine.prepare(c.pcm, index, c.before, c.after))
        index += c.n_frames
    windows = np.concatenate([p.windows for p in pieces])
    assert windows.shape == whole.windows.shape
    # The spectrogram of a piece starts 200 ms before it, so its frames see the same audio.
    np.testing.assert_allclose(windows, whole.windows, atol=1e-4)
    np.testing.assert_array_equal(np.concatenate([p.speaking for p in pieces]), whole.speaking)


async def _until_final(out: RecordingSender) -> None:
    while not any(f.final for f in out.of(m.AvatarFrame)):
        await asyncio.sleep(0.01)
