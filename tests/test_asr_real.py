"""The embedded ASR path with its real models: silero-vad + pocketsphinx on synthesized speech."""

from __future__ import annotations

import numpy as np
import pytest

from services.asr.pocketsphinx_engine import PocketsphinxEngine
from services.asr.settings import AsrSettings
from services.asr.utterance import Final, Onset, Partial, SileroVad, UtteranceTracker
from tests.speech import piper_speech

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    return PocketsphinxEngine()


def _feed(tracker, pcm):
    events = []
    for i in range(0, len(pcm), 320):  # 20 ms chunks, as WebRTC delivers them
        events += tracker.process(pcm[i : i + 320])
    return events


def test_speech_gives_onset_partials_and_a_final_with_keywords(engine):
    speech = piper_speech("Hello there. What is your name?")
    silence = np.zeros(16000, np.int16)
    tracker = UtteranceTracker(engine, SileroVad(), AsrSettings(endpoint_silence_ms=600))
    events = _feed(tracker, np.concatenate([silence, speech, silence]))
    assert isinstance(events[0], Onset)
    assert any(isinstance(e, Partial) for e in events)
    finals = [e for e in events if isinstance(e, Final)]
    text = " ".join(f.text for f in finals).lower()
    assert any(w in text for w in ("hello", "name")), text
    assert all(550 <= f.endpoint_ms <= 800 for f in finals)


def test_silence_and_hum_give_nothing(engine):
    t = np.arange(48000) / 16000
    hum = (300 * np.sin(2 * np.pi * 50 * t)).astype(np.int16)
    tracker = UtteranceTracker(engine, SileroVad(), AsrSettings())
    assert _feed(tracker, np.concatenate([np.zeros(16000, np.int16), hum])) == []
