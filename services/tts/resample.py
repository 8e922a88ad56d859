"""TTS output to the pipeline's 16 kHz mono int16: one tool per shape of audio.

- ``to_16k``: a whole piece (a Piper sentence, a VITS clause, espeak audio in the benchmarks),
  polyphase (scipy ``resample_poly``), no phase shift and an exact output length;
- ``StreamResampler``: a stream that arrives in arbitrary chunks (XTTS ``inference_stream``),
  PyAV's stateful resampler, so chunk boundaries leave no trace.

``resample_float`` is ``to_16k``'s polyphase step at any target rate (XTTS's 22,050 Hz
reference clip).
"""

from __future__ import annotations

from math import gcd

import av
import numpy as np
from scipy.signal import resample_poly

from services.media import SAMPLE_RATE


def resample_float(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """A whole piece of float audio from ``rate`` to ``target`` Hz (``x`` itself if they match)."""
    if rate == target:
        return x
    g = gcd(rate, target)
    return resample_poly(x, target // g, rate // g)


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Float or int16 mono audio at ``rate`` -> int16 at 16 kHz (polyphase, no phase shift)."""
    x = samples.astype(np.float32)
    if samples.dtype == np.int16:
        x /= 32768.0
    x = resample_float(x, rate, SAMPLE_RATE)
    return np.clip(x * 32767.0, -32768, 32767).astype(np.int16)


class StreamResampler:
    """float audio at the model's rate -> 16 kHz mono int16, stateful across chunks."""

    def __init__(self, input_rate: int) -> None:
        self._input_rate = input_rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def push(self, wav: np.ndarray) -> np.ndarray:
        samples = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if samples.size == 0:
            return np.zeros(0, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = self._input_rate
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The samples still inside the filter; call once at the end of a stream."""
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)
