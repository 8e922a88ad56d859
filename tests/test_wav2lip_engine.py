"""Wav2LipEngine: one RGB frame per 640 samples, idle loop, clear missing-weights errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.lipsync.engine import LipsyncModelMissing
from services.lipsync.settings import LipsyncSettings
from services.lipsync.wav2lip_engine import Wav2LipEngine
from tests.wav2lip_helpers import save_random_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("w2l") / "wav2lip_gan.pth", seed=5)


@pytest.fixture(scope="module")
def engine(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Wav2LipEngine:
    settings = LipsyncSettings(
        engine="wav2lip",
        wav2lip_checkpoint=str(checkpoint),
        avatar="",
        device="cpu",
        batch_size=4,
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    return Wav2LipEngine.from_settings(settings)


def _speech(n_samples: int) -> np.ndarray:
    t = np.arange(n_samples) / 16000
    wave = 0.4 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    return (wave * 32767).astype(np.int16)


def test_frames_count_size_and_mouth_changes(engine: Wav2LipEngine) -> None:
    assert engine.name == "wav2lip" and engine.frame_size == (512, 512)
    pcm = _speech(640 * 9 + 100)  # 9 whole units and a partial one
    frames = list(engine.frames(pcm, first_index=3))
    assert len(frames) == 10
    idle = engine.idle_frame(3)
    for frame in frames:
        assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    # RGB out (the astronaut's suit is orange: red > blue), mouth region re-drawn, eyes kept.
    assert frames[0][400, 100, 0] > frames[0][400, 100, 2]
    assert np.abs(frames[0][150:165, 190:260].astype(int) - idle[150:165, 190:260]).mean() > 1.0
    np.testing.assert_array_equal(frames[0][:100], idle[:100])


def test_silence_shows_the_idle_loop(engine: Wav2LipEngine) -> None:
    frames = list(engine.frames(np.zeros(640 * 3, np.int16), first_index=0))
    assert len(frames) == 3
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame, engine.idle_frame(i))
    assert list(engine.frames(np.zeros(0, np.int16), first_index=0)) == []


def test_missing_checkpoint_explains_licence_and_location(tmp_path: Path) -> None:
    path = tmp_path / "models" / "wav2lip" / "wav2lip_gan.pth"
    with pytest.raises(LipsyncModelMissing) as err:
        Wav2LipEngine.from_settings(LipsyncSettings(engine="wav2lip", wav2lip_checkpoint=str(path)))
    message = str(err.value)
    assert str(path) in message and "non-commercial" in message
    assert "AVATAR_WAV2LIP_CHECKPOINT" in message


def test_wrong_file_becomes_model_missing(tmp_path: Path) -> None:
    path = tmp_path / "disc.pth"
    torch.save({"state_dict": {"binary_pred.0.weight": torch.zeros(1)}}, path)
    with pytest.raises(LipsyncModelMissing, match="discriminator"):
        Wav2LipEngine.from_settings(LipsyncSettings(engine="wav2lip", wav2lip_checkpoint=str(path)))
