"""Batched generation, precision choice, silence skipping and feathered paste-back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wav2lip.avatar import Avatar
from wav2lip.inference import (
    Precision,
    Wav2LipGenerator,
    active_frames,
    cpu_has_native_bf16,
    lower_face_mask,
    paste_back,
    render_batch,
    select_precision,
)
from wav2lip.model import Wav2Lip

FP32 = Precision(torch.device("cpu"), torch.float32, channels_last=False)


@pytest.fixture(scope="module")
def model() -> Wav2Lip:
    torch.manual_seed(11)
    return Wav2Lip().eval()


def test_precision_on_this_cpu() -> None:
    chosen = select_precision("cpu")
    assert chosen.device.type == "cpu"
    if cpu_has_native_bf16():
        assert chosen.dtype == torch.bfloat16 and chosen.channels_last
    else:
        assert chosen.dtype == torch.float32
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        select_precision("tpu")


def test_generate_matches_a_plain_upstream_style_call(model: Wav2Lip) -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, (5, 80, 16)).astype(np.float32)
    out = Wav2LipGenerator(model, FP32, batch_size=2).generate(crops, mels)
    assert out.shape == (5, 96, 96, 3) and out.dtype == np.uint8
    # Upstream's tensor recipe: masked copy first, /255, NCHW; output *255 truncated.
    masked = crops.copy()
    masked[:, 48:] = 0
    faces = (
        torch.from_numpy(np.concatenate((masked, crops), axis=3) / 255.0)
        .float()
        .permute(0, 3, 1, 2)
    )
    with torch.inference_mode():
        ref = model(torch.from_numpy(mels)[:, None], faces).permute(0, 2, 3, 1).numpy() * 255.0
    assert np.abs(out.astype(int) - ref.astype(np.uint8).astype(int)).max() <= 1


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU has no native bf16")
def test_bf16_channels_last_stays_close_to_fp32(model: Wav2Lip) -> None:
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, (4, 80, 16)).astype(np.float32)
    fp32 = Wav2LipGenerator(Wav2Lip().eval(), FP32, 4)
    fp32._model.load_state_dict(model.state_dict())
    bf16 = Wav2LipGenerator(Wav2Lip().eval(), select_precision("cpu"), 4)
    bf16._model.load_state_dict(model.state_dict())
    diff = np.abs(fp32.generate(crops, mels).astype(int) - bf16.generate(crops, mels).astype(int))
    assert diff.max() <= 8 and diff.mean() < 1.0


def test_active_frames_follow_the_200ms_window() -> None:
    audio = np.zeros(16000, np.float32)
    audio[8000:8640] = 0.3  # 40 ms of sound at 500..540 ms (inside video frames 12 and 13)
    flags = active_frames(audio, 25)
    # Frames 8..13 have [t, t+200 ms] overlapping the sound (8 = anticipation), the rest are silent.
    assert np.flatnonzero(flags).tolist() == [8, 9, 10, 11, 12, 13]


def test_mask_is_soft_and_keeps_the_upper_face() -> None:
    mask = lower_face_mask(100, 80)[:, :, 0]
    assert mask[:40].max() == 0.0  # eyes and nose untouched
    assert mask[75, 40] == pytest.approx(1.0)  # mouth fully replaced
    assert mask[:, 0].max() < 0.1 and mask[-1].max() < 0.1  # fades out at the box border
    assert 0.0 < mask[55, 40] < 1.0


def test_paste_back_only_changes_the_lower_face_box() -> None:
    frame = np.full((120, 100, 3), 200, np.uint8)
    patch = np.zeros((96, 96, 3), np.uint8)
    out = paste_back(frame, patch, np.array([10, 90, 20, 80]))
    assert out is not frame and np.all(frame == 200)
    changed = np.argwhere(np.any(out != 200, axis=2))
    assert changed[:, 0].min() >= 10 + 30 and changed[:, 0].max() < 90
    assert changed[:, 1].min() >= 20 and changed[:, 1].max() < 80
    assert out[75, 50, 0] < 10  # the mouth area carries the patch


class _CountingGenerator:
    batch_size = 4

    def __init__(self) -> None:
        self.calls: list[int] = []

    def generate(self, crops: np.ndarray, windows: np.ndarray) -> np.ndarray:
        self.calls.append(len(crops))
        return np.zeros_like(crops)


def test_render_batch_skips_the_model_for_silent_frames() -> None:
    frames = np.full((3, 64, 64, 3), 150, np.uint8)
    avatar = Avatar(
        frames=frames,
        boxes=np.array([[8, 56, 8, 56]] * 3, np.int32),
        crops=np.zeros((3, 96, 96, 3), np.uint8),
        fps=25.0,
    )
    gen = _CountingGenerator()
    windows = np.zeros((4, 80, 16), np.float32)
    out = render_batch(gen, avatar, [0, 1, 2, 0], windows, np.array([False, True, False, True]))
    assert gen.calls == [2]
    assert np.all(out[0] == 150) and np.all(out[2] == 150)
    assert out[1][45, 32, 0] < 150 and out[3][45, 32, 0] < 150
    render_batch(gen, avatar, [0, 1], windows[:2], np.array([False, False]))
    assert gen.calls == [2]  # all silent: no model call at all
