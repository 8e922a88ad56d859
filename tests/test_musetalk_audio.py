"""MuseTalk audio features: our per-clause encoder path against upstream's 30 s computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musetalk.audio_features import (
    ClauseFeatures,
    WhisperFeaturizer,
    encode_mel,
    frame_windows,
    speaking_frames,
)
from musetalk.models import load_models
from tests.test_musetalk_models import WHISPER_DIM, build_tiny_folder


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    models, _ = load_models(build_tiny_folder(str(tmp_path_factory.mktemp("mt"))), "cpu")
    return models.whisper_encoder, models.feature_extractor


def speech_like(seconds: float, seed: int = 1) -> np.ndarray:
    """Noise shaped by a syllable-rate envelope: loud and quiet stretches like speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    return (0.3 * envelope * rng.standard_normal(t.size)).astype(np.float32)


def upstream_windows(encoder, extractor, audio: np.ndarray, n_frames: int) -> np.ndarray:
    """MuseTalk's recipe, spelled out: 30 s segments through the stock WhisperEncoder with
    hidden states, stacked, trimmed, 4 zero rows before and 12 after, 10 rows per frame from
    floor(i * 50 / 25), flattened frame-major."""
    feats = []
    for start in range(0, len(audio), 480_000):
        mel = extractor(audio[start : start + 480_000], sampling_rate=16_000, return_tensors="pt")
        with torch.inference_mode():
            out = encoder(mel.input_features, output_hidden_states=True)
        feats.append(torch.stack(out.hidden_states, dim=2))
    feature = torch.cat(feats, dim=1)[:, : math.floor(len(audio) / 16_000 * 50)]
    feature = torch.cat(
        [torch.zeros_like(feature[:, :4]), feature, torch.zeros_like(feature[:, :12])], dim=1
    )
    clips = [feature[:, math.floor(i * 2.0) : math.floor(i * 2.0) + 10] for i in range(n_frames)]
    stacked = torch.cat(clips, dim=0)  # (n, 10, 5, D)
    return stacked.reshape(n_frames, -1, stacked.shape[-1]).numpy()


def test_full_window_matches_upstream_exactly(whisper):
    encoder, extractor = whisper
    audio = speech_like(1.0)
    featurizer = WhisperFeaturizer(encoder, extractor, window="full")
    ours = ClauseFeatures(featurizer, audio)
    assert ours.n_frames == 25
    windows = ours.windows(0, 25)
    assert windows.shape == (25, 50, WHISPER_DIM)
    np.testing.assert_allclose(windows, upstream_windows(encoder, extractor, audio, 25), atol=1e-5)


def test_batches_slice_the_same_features(whisper):
    """Batch-by-batch slicing gives exactly the all-at-once windows: whisper runs once."""
    encoder, extractor = whisper
    features = ClauseFeatures(WhisperFeaturizer(encoder, extractor), speech_like(1.3))
    assert features.n_frames == math.ceil(1.3 * 25)
    batches = [features.windows(s, s + 8) for s in range(0, features.n_frames, 8)]
    whole = frame_windows(features.rows, features.n_frames)
    np.testing.assert_array_equal(np.concatenate(batches), whole)


def test_clause_window_mel_is_exact_and_attention_is_the_only_difference(whisper):
    encoder, extractor = whisper
    audio = speech_like(2.0)
    featurizer = WhisperFeaturizer(encoder, extractor, window="clause")
    short_mel = featurizer.mel(audio, 3 * 16_000)
    full_mel = featurizer.mel(audio, 480_000)
    assert short_mel.shape == (80, 300)
    # The log-mel front end (incl. its global max-8 floor) is identical over the clause.
    np.testing.assert_allclose(short_mel[:, :200], full_mel[:, :200], atol=1e-5)
    with torch.inference_mode():
        short = encode_mel(encoder, torch.from_numpy(short_mel)[None])[0, :100]
        full = encode_mel(encoder, torch.from_numpy(full_mel)[None])[0, :100]
    # Layer 0 (conv + positions) is local, so it matches exactly; deeper layers see fewer keys.
    np.testing.assert_allclose(short[:, 0].numpy(), full[:, 0].numpy(), atol=1e-5)
    assert np.isfinite(short.numpy()).all()


def test_encode_mel_equals_stock_encoder_at_1500_positions(whisper):
    encoder, extractor = whisper
    mel = extractor(speech_like(0.5), sampling_rate=16_000, return_tensors="pt").input_features
    with torch.inference_mode():
        stock = torch.stack(encoder(mel, output_hidden_states=True).hidden_states, dim=2)
        ours = encode_mel(encoder, mel)
    torch.testing.assert_close(ours, stock, atol=1e-5, rtol=1e-5)


def test_stock_encoder_rejects_short_input(whisper):
    """Why encode_mel exists: transformers' WhisperEncoder only takes exactly 3000 mel frames."""
    encoder, _ = whisper
    with pytest.raises(ValueError, match="3000"):
        encoder(torch.zeros(1, 80, 200))


def test_clause_window_is_full_window_at_30_s(whisper):
    encoder, extractor = whisper
    audio = speech_like(30.0)
    a = WhisperFeaturizer(encoder, extractor, "clause").encode(audio)
    b = WhisperFeaturizer(encoder, extractor, "full").encode(audio)
    assert a.shape == (1500, 5, WHISPER_DIM)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_long_clause_is_split_into_30_s_segments(whisper):
    encoder, extractor = whisper
    audio = speech_like(31.0)
    rows = WhisperFeaturizer(encoder, extractor, "full").encode(audio)
    assert rows.shape == (1550, 5, WHISPER_DIM)
    ref = upstream_windows(encoder, extractor, audio, 775)
    np.testing.assert_allclose(frame_windows(rows, 775), ref, atol=1e-5)


def test_frame_windows_cover_minus_80_to_plus_120_ms():
    rows = np.arange(20, dtype=np.float32)[:, None, None] + np.zeros((20, 5, 3), np.float32)
    win = frame_windows(rows, 10)  # rows are numbered by their 20 ms slot
    first = win[0].reshape(10, 5, 3)[:, 0, 0]
    np.testing.assert_array_equal(first, [0, 0, 0, 0, 0, 1, 2, 3, 4, 5])  # 4 zero rows = -80 ms
    third = win[3].reshape(10, 5, 3)[:, 0, 0]
    np.testing.assert_array_equal(third, np.arange(2, 12))  # frame 3 = row 6: rows 2..11
    last = win[9].reshape(10, 5, 3)[:, 0, 0]
    np.testing.assert_array_equal(last, [14, 15, 16, 17, 18, 19, 0, 0, 0, 0])


def test_speaking_frames_marks_silence():
    audio = np.zeros(16_000, dtype=np.float32)
    audio[8000:9600] = 0.2
    flags = speaking_frames(audio, 25, -50.0)
    assert not flags[:10].any() and flags[12:15].all() and not flags[-5:].any()
