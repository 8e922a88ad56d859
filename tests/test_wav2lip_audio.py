"""The mel front end reproduces upstream (librosa is the test-only oracle)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.signal

from wav2lip.audio import mel_filterbank, mel_windows, melspectrogram, upstream_mel_chunks


def _upstream_mel(wav: np.ndarray, pad_mode: str) -> np.ndarray:
    """Upstream audio.melspectrogram written with librosa, as hparams.py configures it."""
    y = scipy.signal.lfilter([1, -0.97], [1], wav)
    spec = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, pad_mode=pad_mode)
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ np.abs(spec))) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


@pytest.fixture(scope="module")
def speechlike() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(1.3 * 16000)) / 16000
    voiced = 0.3 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return voiced + 0.05 * rng.standard_normal(t.size)


def test_filterbank_matches_librosa_slaney() -> None:
    expected = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    np.testing.assert_allclose(mel_filterbank(), expected, atol=1e-7)


def test_interior_frames_match_modern_librosa(speechlike: np.ndarray) -> None:
    ours = melspectrogram(speechlike)  # reflect padding, as the weights were trained
    ref = _upstream_mel(speechlike, "constant")  # librosa >= 0.9 default
    assert ours.shape == ref.shape == (80, 1 + len(speechlike) // 200)
    # Only the first/last two frames see the edge padding (LIPSYNC.md 1.5).
    np.testing.assert_allclose(ours[:, 2:-2], ref[:, 2:-2], atol=1e-4)
    assert np.abs(ours[:, :2] - ref[:, :2]).max() > 1e-3  # the trap is real, not hidden


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_every_frame_matches_librosa_with_same_padding(
    speechlike: np.ndarray, pad_mode: str
) -> None:
    np.testing.assert_allclose(
        melspectrogram(speechlike, pad_mode=pad_mode),
        _upstream_mel(speechlike, pad_mode),
        atol=1e-4,
    )


def test_silence_is_floor_and_values_are_bounded(speechlike: np.ndarray) -> None:
    assert np.all(melspectrogram(np.zeros(3200)) == -4.0)
    mel = melspectrogram(speechlike)
    assert mel.dtype == np.float32 and mel.min() >= -4.0 and mel.max() <= 4.0


def test_upstream_chunking_rule() -> None:
    mel = np.arange(40, dtype=np.float32)[None, :].repeat(80, axis=0)
    chunks = upstream_mel_chunks(mel, fps=25)
    starts = [int(c[0, 0]) for c in chunks]
    # int(i*3.2) while it fits (start + 16 <= 40), then the last 16 frames once.
    assert starts == [0, 3, 6, 9, 12, 16, 19, 22, 24]
    assert all(c.shape == (80, 16) for c in chunks)


def test_mel_windows_gives_exact_count_and_clamps() -> None:
    mel = np.arange(30, dtype=np.float32)[None, :].repeat(80, axis=0)
    windows = mel_windows(mel, 8)
    assert windows.shape == (8, 80, 16)
    assert [int(w[0, 0]) for w in windows] == [0, 3, 6, 9, 12, 14, 14, 14]
    short = mel_windows(mel[:, :5], 2)
    assert short.shape == (2, 80, 16) and np.all(short[:, :, 5:] == -4.0)
