"""The browser-path WER benchmark's own arithmetic: the microphone track, its noise, and which
question each transcript belongs to. (Its run through Chromium is the benchmark itself.)"""

from __future__ import annotations

import numpy as np

from bench.bench_mic_wer import LEAD_S, PAUSE_S, assign, mic_track, one_voice_each
from bench.wer_set import SAMPLE_RATE, Utterance


def _utterance(text: str, family: str, seconds: float, level: int = 3000) -> Utterance:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return Utterance(text, family, "normal", (level * np.sin(2 * np.pi * 220 * t)).astype(np.int16))


def test_each_sentence_is_spoken_once_by_the_next_voice():
    families = ["a", "b", "c", "d", "e"]
    every = [_utterance(f"s{i}", f, 0.1) for i in range(3) for f in families]
    picked = one_voice_each(every)
    assert [(u.reference, u.family) for u in picked] == [("s0", "a"), ("s1", "b"), ("s2", "c")]


def test_the_track_places_each_question_after_the_last_ones_pause():
    utterances = [_utterance("one", "a", 1.0), _utterance("two", "b", 2.0)]
    audio, starts = mic_track(utterances, snr_db=None)
    assert starts == [LEAD_S, LEAD_S + 1.0 + PAUSE_S]
    assert len(audio) == int((LEAD_S + 3.0 + 2 * PAUSE_S) * SAMPLE_RATE)
    first = int(starts[1] * SAMPLE_RATE)
    assert np.array_equal(audio[first : first + 100], utterances[1].pcm[:100])
    assert not audio[: int(LEAD_S * SAMPLE_RATE)].any()


def test_noise_sits_the_asked_for_level_below_the_speech():
    utterances = [_utterance("one", "a", 1.0)]
    audio, _ = mic_track(utterances, snr_db=10)
    pause = audio[: int(LEAD_S * SAMPLE_RATE)].astype(np.float64)
    speech_rms = 3000 / np.sqrt(2)
    assert abs(20 * np.log10(speech_rms / np.sqrt(np.mean(pause**2))) - 10) < 0.5
    assert not np.array_equal(mic_track(utterances, snr_db=None)[0], audio)


def test_a_transcript_belongs_to_the_question_begun_last_before_it():
    starts = [2.0, 8.0, 14.0]
    finals = [(1.0, "noise before anything"), (3.1, "what is"), (3.9, "the time"), (9.0, ""), (15.2, "stop")]
    assert assign(finals, starts) == ["what is the time", "", "stop"]
