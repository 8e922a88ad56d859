"""Wav2Lip's mel-spectrogram front end, in numpy/scipy (no librosa at run time).

Reproduces upstream ``audio.melspectrogram`` (hparams: 16 kHz, pre-emphasis 0.97, Hann STFT
n_fft=win=800, hop=200, centred; 80 Slaney mels over 55..7600 Hz; magnitude -> dB - 20;
symmetric normalisation to [-4, 4]). The result has 80 frames per second: frame k is centred on
sample 200*k.

Edge padding: the released weights were trained with librosa 0.7, whose centred STFT pads by
*reflection*; librosa >= 0.9 pads with *zeros*. Only the first and last two frames differ. We
default to reflection (what the weights saw) and offer ``pad_mode="constant"`` to match a modern
librosa call.

Per video frame (``mel_windows``): frame i sees the 16 mel frames (200 ms) starting at
``int(i * 80 / fps)``, i.e. audio [t_i, t_i + 200 ms].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import get_window, lfilter


@dataclass(frozen=True, slots=True)
class MelParams:
    sample_rate: int = 16_000
    n_fft: int = 800
    hop_size: int = 200
    win_size: int = 800
    num_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    ref_level_db: float = 20.0
    min_level_db: float = -100.0
    max_abs_value: float = 4.0


MEL_FRAMES_PER_SECOND = 80
MEL_STEP_SIZE = 16  # mel frames per video frame window (200 ms)
MEL_FLOOR = -4.0  # normalised value of digital silence


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    # Slaney's Auditory Toolbox scale: linear below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(
        hz >= min_log_hz,
        min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep,
        hz / f_sp,
    )


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(
        mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel
    )


@lru_cache(maxsize=4)
def mel_filterbank(params: MelParams = MelParams()) -> np.ndarray:
    """(num_mels, 1 + n_fft//2) triangular filters, Slaney-scaled and area-normalised."""
    fft_hz = np.linspace(0.0, params.sample_rate / 2.0, 1 + params.n_fft // 2)
    edges_mel = np.linspace(
        _hz_to_mel_slaney(params.fmin), _hz_to_mel_slaney(params.fmax), params.num_mels + 2
    )
    edges_hz = _mel_to_hz_slaney(edges_mel)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney normalisation: each filter has unit area in Hz.
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


def _stft_magnitude(y: np.ndarray, params: MelParams, pad_mode: str) -> np.ndarray:
    half = params.n_fft // 2
    if pad_mode == "reflect" and len(y) <= half:
        pad_mode = "constant"  # numpy cannot reflect a signal shorter than the pad
    padded = np.pad(y, half, mode=pad_mode)
    n_frames = 1 + (len(padded) - params.n_fft) // params.hop_size
    frames = np.lib.stride_tricks.sliding_window_view(padded, params.n_fft)[:: params.hop_size][
        :n_frames
    ]
    window = get_window("hann", params.win_size, fftbins=True)
    spectrum = np.fft.rfft(frames * window, axis=1)
    return np.abs(spectrum).T  # (1 + n_fft//2, n_frames)


def melspectrogram(
    wav: np.ndarray, params: MelParams = MelParams(), pad_mode: str = "reflect"
) -> np.ndarray:
    """(80, 1 + len(wav)//200) float32 normalised mel spectrogram of float audio in [-1, 1]."""
    if pad_mode not in ("reflect", "constant"):
        raise ValueError(f"pad_mode must be 'reflect' or 'constant', not {pad_mode!r}")
    y = np.asarray(wav, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {y.shape}")
    y = lfilter([1.0, -params.preemphasis], [1.0], y)
    magnitude = _stft_magnitude(y, params, pad_mode)
    mel = mel_filterbank(params) @ magnitude
    min_level = np.power(10.0, params.min_level_db / 20.0)
    db = 20.0 * np.log10(np.maximum(min_level, mel)) - params.ref_level_db
    m = params.max_abs_value
    normalised = (2.0 * m) * ((db - params.min_level_db) / -params.min_level_db) - m
    return np.clip(normalised, -m, m).astype(np.float32)


def pcm16_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 samples -> float in [-1, 1) (what ``librosa.load`` gives for a 16-bit WAV)."""
    return np.asarray(pcm, dtype=np.float32) / 32768.0


def window_start(frame_index: int, fps: float) -> int:
    # Upstream computes int(i * 80 / fps) in floating point; keep the same rounding.
    return int(frame_index * (MEL_FRAMES_PER_SECOND / fps))


def upstream_mel_chunks(mel: np.ndarray, fps: float = 25.0) -> np.ndarray:
    """Upstream ``inference.py`` chunking: windows until one would run past the end, then the
    last 16 frames once more. Returns (n_chunks, 80, 16)."""
    if mel.shape[1] < MEL_STEP_SIZE:
        raise ValueError(f"audio too short: {mel.shape[1]} mel frames, need {MEL_STEP_SIZE}")
    chunks = []
    i = 0
    while True:
        start = window_start(i, fps)
        if start + MEL_STEP_SIZE > mel.shape[1]:
            chunks.append(mel[:, -MEL_STEP_SIZE:])
            break
        chunks.append(mel[:, start : start + MEL_STEP_SIZE])
        i += 1
    return np.stack(chunks)


def mel_windows(mel: np.ndarray, n_frames: int, fps: float = 25.0) -> np.ndarray:
    """Exactly ``n_frames`` windows (n_frames, 80, 16); windows past the end are clamped to the
    last 16 frames (upstream's end rule); a spectrogram shorter than 16 frames is padded with
    silence."""
    if mel.shape[1] < MEL_STEP_SIZE:
        pad = np.full((mel.shape[0], MEL_STEP_SIZE - mel.shape[1]), MEL_FLOOR, dtype=mel.dtype)
        mel = np.concatenate([mel, pad], axis=1)
    last_start = mel.shape[1] - MEL_STEP_SIZE
    out = np.empty((n_frames, mel.shape[0], MEL_STEP_SIZE), dtype=mel.dtype)
    for i in range(n_frames):
        start = min(window_start(i, fps), last_start)
        out[i] = mel[:, start : start + MEL_STEP_SIZE]
    return out
