"""services/tts/resample.py: the whole-piece and the streaming path to 16 kHz int16 agree."""

from __future__ import annotations

import numpy as np
import pytest

from services.media import SAMPLE_RATE
from services.tts.resample import StreamResampler, resample_float, to_16k


def _tone(rate: int) -> np.ndarray:
    t = np.arange(rate) / rate
    return (0.5 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [22_050, 24_000, 48_000])
def test_to_16k_matches_the_stream_resampler_inside_the_piece(rate: int) -> None:
    wav = _tone(rate)
    whole = to_16k(wav, rate)
    stream = StreamResampler(rate)
    streamed = np.concatenate([stream.push(wav), stream.flush()])
    assert whole.dtype == np.int16 and whole.size == SAMPLE_RATE  # polyphase: exact length
    assert abs(streamed.size - SAMPLE_RATE) <= 2
    # Different filters, same signal: only the edges (filter start-up) may differ by more.
    inner = slice(200, SAMPLE_RATE - 200)
    assert np.abs(whole[inner].astype(np.int32) - streamed[inner]).max() <= 16


def test_to_16k_reads_int16_and_passes_16k_through() -> None:
    pcm = (_tone(SAMPLE_RATE) * 32767).astype(np.int16)
    assert np.abs(to_16k(pcm, SAMPLE_RATE).astype(np.int32) - pcm).max() <= 1
    assert resample_float(pcm, SAMPLE_RATE, SAMPLE_RATE) is pcm
