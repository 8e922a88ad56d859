"""The listener's latency (issue 24): where a voice starts and stops at -40 dBFS in 10 ms blocks,
how the page's taps become page time, and the gateway's end of speech in its stats event."""

import time

import numpy as np
import pytest

from bench.heard import heard_latency
from bench.levels import block_mean_squares, first_loud_block, longest_quiet_ms, voice_end_s, voice_onset_s
from services import messages as m

RATE = 16000


def _tone(seconds: float, dbfs: float, rate: int = RATE) -> np.ndarray:
    """A 440 Hz tone whose mean square is ``dbfs`` (a sine's mean square is amplitude^2 / 2)."""
    t = np.arange(int(seconds * rate)) / rate
    amplitude = np.sqrt(2 * 10 ** (dbfs / 10))
    return (amplitude * 32768 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


def test_a_block_level_is_its_mean_square_on_full_scale():
    levels = block_mean_squares(_tone(0.1, -20.0), RATE)
    assert len(levels) == 10
    assert 10 * np.log10(levels).mean() == pytest.approx(-20.0, abs=0.1)
    assert len(block_mean_squares(_silence(0.005), RATE)) == 0  # no whole block


def test_trailing_near_silence_is_not_speech():
    # Voice from 0.30 s to 1.30 s, then 200 ms at -50 dBFS (Piper's breathy tail), then silence.
    pcm = np.concatenate([_silence(0.3), _tone(1.0, -20.0), _tone(0.2, -50.0), _silence(0.5)])
    assert voice_onset_s(pcm, RATE) == pytest.approx(0.30)
    assert voice_end_s(pcm, RATE) == pytest.approx(1.30)


def test_a_quiet_voice_just_above_the_threshold_counts_and_just_below_does_not():
    above = np.concatenate([_silence(0.1), _tone(0.5, -38.0), _silence(0.1)])
    below = np.concatenate([_silence(0.1), _tone(0.5, -42.0), _silence(0.1)])
    assert voice_end_s(above, RATE) == pytest.approx(0.6)
    assert voice_end_s(below, RATE) is None and voice_onset_s(below, RATE) is None


def test_the_end_is_the_last_loud_block_even_after_a_pause():
    pcm = np.concatenate([_tone(0.4, -20.0), _silence(0.3), _tone(0.25, -30.0), _silence(0.2)])
    assert voice_end_s(pcm, RATE) == pytest.approx(0.95)


def test_first_loud_block_skips_what_came_before_the_mark():
    blocks = [(0.0, 1e-2), (10.0, 1e-7), (20.0, 2e-5), (30.0, 3e-4), (40.0, 1e-2)]
    assert first_loud_block(blocks, after_ms=5.0) == 30.0
    assert first_loud_block(blocks, after_ms=0.0) == 0.0
    assert first_loud_block(blocks, after_ms=35.0) == 40.0
    assert first_loud_block(blocks, after_ms=50.0) is None


def test_the_longest_pause_counts_only_pauses_inside_speech():
    loud, quiet = 1e-2, 1e-6
    levels = [loud] * 5 + [quiet] * 12 + [loud] * 3 + [quiet] * 4 + [loud] * 2 + [quiet] * 50
    blocks = [(10.0 * i, ms) for i, ms in enumerate(levels)]
    assert longest_quiet_ms(blocks, 0.0, 10_000.0) == 120.0  # the trailing silence is not a pause
    assert longest_quiet_ms(blocks, 0.0, 100.0) == 0.0  # the 120 ms pause is not over by then
    assert longest_quiet_ms(blocks, 170.0, 10_000.0) == 40.0


def _taps(rate: int, mic_onset_frame: int, answer_frame: int) -> dict:
    """Page taps as the worklet records them: the audio clock runs 1000 ms behind page time for
    processing and 1040 ms behind for output (40 ms output latency)."""
    n = rate // 100
    mic = [[f, 1e-2 if f >= mic_onset_frame else 0.0] for f in range(0, answer_frame, n)]
    answer = [[f, 1e-2 if f >= answer_frame else 0.0] for f in range(0, answer_frame + 10 * n, n)]
    clock = [[c, c * 1000 + 1040.0, c * 1000 + 1000.0 + extra, c]
             for c, extra in ((0.5, 3.0), (1.0, 0.0), (1.5, 7.0))]
    return {"rate": rate, "mic": mic, "answer": answer, "clock": clock, "time_origin_ms": 1_000_000.0,
            "gum_at_ms": 1000.0}


def test_the_three_spans_add_up_and_use_each_tap_on_its_own_clock():
    rate = 48000
    question = np.concatenate([_tone(1.0, -20.0), _tone(0.2, -55.0)])  # voice ends at 1.0 s
    # The mic hears the voice at audio time 3.0 s (page 4000 ms): the voice ends at page 5000.
    # The answer's first loud block is audio 4.9 s, output (heard) at page 4900 + 1040 ms.
    taps = _taps(rate, mic_onset_frame=3 * rate, answer_frame=int(4.9 * rate))
    heard_page = 4.9 * 1000 + 1040.0
    gateway_end_unix = 1_000_000.0 + 5000.0 + 60.0  # the ASR noticed 60 ms after the voice ended
    events = [{"type": "stats", "turn": 2, "speech_end_unix_ms": gateway_end_unix,
               "stages": {"first_audio_ms": 700.0, "llm_request_ms": 150.0, "llm_first_clause_ms": 300.0,
                          "tts_first_audio_ms": 150.0, "lipsync_first_frame_ms": 20.0}}]
    r = heard_latency(taps, events, question, lead_s=3.0)
    assert r["anchor"] == "mic"
    assert r["total_ms"] == pytest.approx(heard_page - 5000.0)
    assert r["uplink_vad_ms"] == pytest.approx(60.0)
    assert r["server_ms"] == pytest.approx(700.0)
    assert r["downlink_ms"] == pytest.approx(heard_page - 5000.0 - 760.0)
    assert r["uplink_vad_ms"] + r["server_ms"] + r["downlink_ms"] == pytest.approx(r["total_ms"])
    assert r["output_minus_process_ms"] == pytest.approx(40.0)
    assert r["opening_longest_pause_ms"] == 0.0  # the answer never pauses
    assert r["server_parts"]["rest_ms"] == pytest.approx(80.0)  # hops, waits, the clock's tick
    # getUserMedia at page 1000 + 3 s lead + 1 s voice: the mic's anchor agrees here.
    assert r["anchor_minus_gum_ms"] == pytest.approx(0.0)


def test_no_answer_heard_leaves_the_total_open():
    rate = 48000
    taps = _taps(rate, mic_onset_frame=3 * rate, answer_frame=int(4.9 * rate))
    taps["answer"] = [[f, 0.0] for f, _ in taps["answer"]]
    r = heard_latency(taps, [], _tone(1.0, -20.0), lead_s=3.0)
    assert r["total_ms"] is None and r["server_ms"] is None and r["downlink_ms"] is None


async def test_the_stats_event_carries_the_gateways_end_of_speech(timeline):
    tl = timeline
    await tl.event(m.SpeechStarted("s1", 0))
    speech_end = time.time() - 0.1  # the ASR says the voice ended 100 ms ago
    await tl.event(m.Transcript("s1", 1, "What is the capital of France", True, speech_end))
    tl.answer(1, ["Paris."])
    await tl.run_until(2.0)
    [stats] = tl.page_events("stats")
    assert stats["speech_end_unix_ms"] == pytest.approx(speech_end * 1000, abs=0.1)
    # The LLM was asked at once: the ASR's share of the server span is those 100 ms.
    assert 100 <= stats["stages"]["llm_request_ms"] < 2000
    assert stats["stages"]["first_audio_ms"] >= stats["stages"]["llm_request_ms"]
