"""Speculative end of turn in the ASR: a tentative transcript at the first pause, SpeechResumed
if the user goes on, and a final that reuses the tentative decode when only silence followed."""

import numpy as np

from services.asr.endpointer import VAD_WINDOW_SAMPLES
from services.asr.settings import AsrSettings
from services.asr.utterance import Final, Onset, Resumed, Tentative, UtteranceTracker


class _Stream:
    def __init__(self, log: list) -> None:
        self.log = log
        self.samples = 0

    def accept(self, pcm):
        self.samples += len(pcm)
        return ""

    def peek(self, silence_samples=0):
        self.log.append(("peek", self.samples, silence_samples))
        return f"words up to {self.samples}"

    def finish(self):
        self.log.append(("finish", self.samples))
        return f"words up to {self.samples}"

    def close(self):
        self.log.append(("close", self.samples))


class _Engine:
    name = "fake"

    def __init__(self) -> None:
        self.log: list = []

    def new_stream(self):
        return _Stream(self.log)


class _ScriptedVad:
    """Speech probability per 32 ms window, from a script of (probability, windows)."""

    def __init__(self, script):
        self.probs = [p for p, n in script for _ in range(n)]
        self.i = 0

    def __call__(self, window):
        p = self.probs[self.i] if self.i < len(self.probs) else 0.0
        self.i += 1
        return p


def _run(script, settings=AsrSettings()):
    engine = _Engine()
    tracker = UtteranceTracker(engine, _ScriptedVad(script), settings, clock=lambda: 1000.0)
    n = sum(k for _, k in script)
    events = tracker.process_recording(np.zeros(n * VAD_WINDOW_SAMPLES, np.int16), 640)
    return events, engine.log


def test_a_pause_gives_one_tentative_and_the_final_reuses_it():
    # 0.5 s of speech, then silence until the endpoint (280 ms = 9 windows) and beyond.
    events, log = _run([(0.9, 16), (0.0, 14)])
    kinds = [type(e) for e in events]
    assert kinds == [Onset, Tentative, Final]
    tentative, final = events[1], events[2]
    assert final.text == tentative.text  # no second decode of the same words
    assert [op for op, *_ in log] == ["peek", "close"]
    # Sent 2 windows (64 ms) into the silence, with the time speech ended.
    assert abs(tentative.speech_end_unix_s - (1000.0 - 2 * 0.032)) < 1e-6


def test_speaking_on_after_a_pause_resumes_and_the_final_decodes_everything():
    events, log = _run([(0.9, 16), (0.0, 3), (0.9, 10), (0.0, 14)])
    kinds = [type(e) for e in events]
    assert kinds == [Onset, Tentative, Resumed, Tentative, Final]
    assert events[3].text != events[1].text  # the second pause heard more words
    assert events[4].text == events[3].text


def test_a_one_window_dip_inside_a_word_is_not_a_pause():
    events, _ = _run([(0.9, 8), (0.0, 1), (0.9, 8), (0.0, 14)])
    assert [type(e) for e in events] == [Onset, Tentative, Final]


def test_speculation_can_be_turned_off():
    events, log = _run([(0.9, 16), (0.0, 14)], AsrSettings(tentative_silence_ms=0))
    assert [type(e) for e in events] == [Onset, Final]
    assert [op for op, *_ in log] == ["finish"]


def test_the_tentative_is_decoded_one_window_before_it_is_sent():
    # Whisper's run overlaps the pause's last window instead of following it (issue 24).
    events, log = _run([(0.9, 16), (0.0, 14)])
    assert log[0] == ("peek", 17 * VAD_WINDOW_SAMPLES, VAD_WINDOW_SAMPLES)  # at the 1st silent window, the 2nd as zeros
    assert events[1].text == f"words up to {17 * VAD_WINDOW_SAMPLES}"
    assert abs(events[1].speech_end_unix_s - (1000.0 - 2 * 0.032)) < 1e-6  # still sent at 64 ms
    _, log = _run([(0.9, 16), (0.0, 14)], AsrSettings(tentative_decode_ahead_ms=0))
    assert log[0] == ("peek", 18 * VAD_WINDOW_SAMPLES, 0)  # the old way: when it is due


def test_a_text_decoded_ahead_for_a_pause_that_did_not_last_is_never_sent():
    events, log = _run([(0.9, 8), (0.0, 1), (0.9, 8), (0.0, 14)])
    assert [type(e) for e in events] == [Onset, Tentative, Final]  # no Resumed: nothing was sent
    assert [op for op, *_ in log] == ["peek", "peek", "close"]  # the dip's decode was thrown away
    assert events[1].text == f"words up to {18 * VAD_WINDOW_SAMPLES}"
