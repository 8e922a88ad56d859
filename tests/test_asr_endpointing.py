"""VAD endpointing and the utterance tracker, driven by scripted speech probabilities."""

import numpy as np

from services.asr.endpointer import Endpointer, EndpointerConfig, VadEvent
from services.asr.settings import AsrSettings
from services.asr.utterance import Final, Onset, Partial, UtteranceTracker


def _run(probs, **cfg):
    ep = Endpointer(EndpointerConfig(**cfg))
    return [ep.update(p) for p in probs]


def test_onset_needs_a_few_voiced_windows_but_tolerates_gaps():
    # "Stop." voiced / gap / voiced / voiced: 3 voiced windows within the look-back = onset.
    events = _run([0.9, 0.1, 0.9, 0.9], onset_ms=96)
    assert events[-1] is VadEvent.ONSET
    assert VadEvent.ONSET not in _run([0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9], onset_ms=96)


def test_end_after_configured_trailing_silence():
    probs = [0.9] * 5 + [0.0] * 12
    events = _run(probs, onset_ms=96, silence_ms=300)
    first_end = events.index(VadEvent.END)
    # 300 ms = ceil(300/32) = 10 silent windows after the last voiced one.
    assert first_end == 4 + 10


def test_hysteresis_keeps_soft_endings_inside_the_utterance():
    events = _run([0.9] * 4 + [0.4] * 20, threshold=0.5, hysteresis=0.15)
    assert VadEvent.END not in events


class _ScriptedVad:
    def __init__(self, probs):
        self.probs = list(probs)

    def __call__(self, window):
        return self.probs.pop(0) if self.probs else 0.0


class _Stream:
    def __init__(self, log):
        self.log = log
        self.samples = 0

    def accept(self, pcm):
        self.samples += len(pcm)
        return f"words {self.samples // 512}"

    def finish(self):
        self.log.append(self.samples)
        return "hello world"


class _Engine:
    name = "scripted"

    def __init__(self):
        self.finished = []

    def new_stream(self):
        return _Stream(self.finished)


def test_tracker_emits_onset_partials_and_final_with_preroll():
    probs = [0.0] * 5 + [0.9] * 30 + [0.0] * 12
    engine = _Engine()
    settings = AsrSettings(endpoint_silence_ms=300, preroll_ms=160, partial_interval_ms=200)
    tracker = UtteranceTracker(engine, _ScriptedVad(probs), settings, clock=lambda: 1000.0)
    events = []
    audio = np.zeros(512 * len(probs), np.int16)
    for i in range(0, len(audio), 320):  # 20 ms chunks, as from WebRTC
        events += tracker.process(audio[i : i + 320])
    kinds = [type(e) for e in events]
    assert kinds[0] is Onset
    assert Partial in kinds
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 1 and finals[0].text == "hello world"
    # endpoint delay is the trailing silence measured in media time, not wall time
    assert 280 <= finals[0].endpoint_ms <= 400
    assert finals[0].speech_end_unix_s < 1000.0
    # pre-roll: audio from before the onset reached the recogniser
    assert engine.finished[0] > 512 * 30


def test_silence_yields_nothing():
    tracker = UtteranceTracker(_Engine(), _ScriptedVad([0.0] * 50), AsrSettings())
    assert tracker.process(np.zeros(512 * 50, np.int16)) == []


def test_onset_is_reported_before_the_recogniser_starts():
    # The recogniser's start (pre-roll decode) is slow; the onset drives barge-in, so
    # process() returns right after it and finishes the audio on the next call.
    probs = [0.0] * 5 + [0.9] * 30 + [0.0] * 12
    engine = _Engine()
    started = []
    real_new_stream = engine.new_stream
    engine.new_stream = lambda: started.append(True) or real_new_stream()
    tracker = UtteranceTracker(engine, _ScriptedVad(probs), AsrSettings(endpoint_silence_ms=300))
    first = tracker.process(np.zeros(512 * len(probs), np.int16))
    assert [type(e) for e in first] == [Onset]
    assert not started and tracker.has_pending()
    rest = []
    while tracker.has_pending():
        rest += tracker.process(np.zeros(0, np.int16))
    assert started == [True]
    assert any(isinstance(e, Final) for e in rest)
    assert not any(isinstance(e, Onset) for e in rest)
