"""The recogniser hears enough silence before the first word.

The voice detector calls the onset ~150 ms into the speech (it needs 96 ms of voiced windows),
and the pre-roll counts back from there. Whisper hears a first word said with little lead worse
(bench_wer through the real cut: 300 ms pre-roll 11.7 %, 500 ms 9.4 % WER), so the default
pre-roll must leave a real lead, measured here on real speech with the real detector.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.wer_set import espeak
from services.asr.settings import AsrSettings
from services.asr.utterance import Final, SileroVad, UtteranceTracker
from services.media import SAMPLE_RATE


class _Recorder:
    """An engine that keeps what the tracker hands it."""

    name = "recorder"

    def __init__(self) -> None:
        self.utterances: list[np.ndarray] = []

    def new_stream(self):  # noqa: ANN201
        engine, parts = self, []

        class Stream:
            def accept(self, pcm: np.ndarray) -> str:
                parts.append(np.asarray(pcm, np.int16))
                return ""

            def peek(self, silence_samples: int = 0) -> str:
                return ""

            def finish(self) -> str:
                engine.utterances.append(np.concatenate(parts))
                return "words"

            def close(self) -> None:
                parts.clear()

        return Stream()


def _cut(settings: AsrSettings, speech: np.ndarray) -> np.ndarray:
    """What the recogniser is handed for ``speech`` said between seconds of silence."""
    silence = np.zeros(SAMPLE_RATE, np.int16)
    audio = np.concatenate([silence, speech, silence])
    engine = _Recorder()
    tracker = UtteranceTracker(engine, SileroVad(), settings)
    finals = [e for e in tracker.process_recording(audio) if isinstance(e, Final)]
    assert len(finals) == len(engine.utterances) == 1
    return engine.utterances[0]


def _voiced(audio: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.abs(audio) > 50)


def _lead_ms(settings: AsrSettings, speech: np.ndarray) -> float:
    return 1000 * _voiced(_cut(settings, speech))[0] / SAMPLE_RATE


def test_the_default_preroll_leaves_a_real_lead_before_the_first_word():
    assert AsrSettings().preroll_ms == AsrSettings.from_env({}).preroll_ms == 500
    speech = espeak("Hello avatar.", "en+f3", 175)
    # Onset is called inside the speech, so the lead is the pre-roll less ~150 ms: with 300 ms
    # it was ~140 ms, too little for Whisper.
    assert _lead_ms(AsrSettings(), speech) >= 250
    assert _lead_ms(AsrSettings(preroll_ms=300), speech) < 250


@pytest.mark.parametrize("voice", ["en-us", "en+m3"])
def test_the_whole_question_reaches_the_recogniser(voice: str):
    speech = espeak("How many legs does a spider have?", voice, 175)
    heard = _cut(AsrSettings(), speech)
    lead, span = _voiced(heard)[0], _voiced(speech)
    assert 250 <= 1000 * lead / SAMPLE_RATE <= 500
    # Every voiced sample, first to last, in order: nothing of the question cut off.
    assert np.array_equal(heard[lead : lead + span[-1] - span[0] + 1], speech[span[0] : span[-1] + 1])
