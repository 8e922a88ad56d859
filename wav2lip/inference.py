"""Batched Wav2Lip generation and feathered paste-back.

Precision is chosen per device: float16 on CUDA; on CPU bfloat16 weights with channels_last
activations when the CPU has native bf16 (AVX512-BF16 or AMX; measured about 2x fp32 here), else
float32 (emulated bf16 would be slower than fp32).

Paste-back differs from upstream on purpose: upstream overwrites the whole face box with the
resized 96x96 output, which leaves a visible rectangle and blurs the eyes. The generator only
re-draws the lower half (its input had that half masked), so we blend just the mouth/lower-face
region through a soft mask that fades to zero at the box edges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from avatar_base.device import cpu_has_native_bf16, pick_device
from wav2lip.audio import MEL_FRAMES_PER_SECOND, MEL_STEP_SIZE
from wav2lip.avatar import FACE_SIZE, Avatar
from wav2lip.model import Wav2Lip

logger = logging.getLogger(__name__)

DEFAULT_SILENCE_DBFS = -50.0


@dataclass(frozen=True, slots=True)
class Precision:
    device: torch.device
    dtype: torch.dtype
    channels_last: bool


def select_precision(device: str = "auto") -> Precision:
    """``device`` is auto | cpu | cuda (``avatar_base.device.pick_device`` reads it)."""
    chosen = pick_device(device)
    if chosen.type == "cuda":
        return Precision(chosen, torch.float16, channels_last=True)
    if cpu_has_native_bf16():
        return Precision(chosen, torch.bfloat16, channels_last=True)
    return Precision(chosen, torch.float32, channels_last=False)


def prepare_model(model: Wav2Lip, precision: Precision) -> Wav2Lip:
    model = model.eval().to(precision.device, dtype=precision.dtype)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


class Wav2LipGenerator:
    """Runs the generator over batches: (BGR crops, mel windows) -> BGR 96x96 patches."""

    def __init__(self, model: Wav2Lip, precision: Precision, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._model = prepare_model(model, precision)
        self._precision = precision
        self.batch_size = batch_size

    @property
    def precision(self) -> Precision:
        return self._precision

    def _face_tensor(self, crops: np.ndarray) -> torch.Tensor:
        faces = torch.from_numpy(np.ascontiguousarray(crops)).to(self._precision.device)
        faces = faces.permute(0, 3, 1, 2).to(self._precision.dtype) / 255.0  # (N,3,96,96)
        masked = faces.clone()
        masked[:, :, FACE_SIZE // 2 :] = 0  # the model re-draws the lower half
        x = torch.cat((masked, faces), dim=1)
        if self._precision.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _mel_tensor(self, mels: np.ndarray) -> torch.Tensor:
        mel = torch.from_numpy(np.ascontiguousarray(mels, dtype=np.float32))
        return mel.unsqueeze(1).to(self._precision.device, self._precision.dtype)  # (N,1,80,16)

    def generate(self, crops: np.ndarray, mel_windows: np.ndarray) -> np.ndarray:
        """(N,96,96,3) uint8 BGR crops + (N,80,16) mel windows -> (N,96,96,3) uint8 BGR."""
        if len(crops) != len(mel_windows):
            raise ValueError(f"{len(crops)} crops but {len(mel_windows)} mel windows")
        if mel_windows.shape[1:] != (80, MEL_STEP_SIZE):
            raise ValueError(
                f"mel windows must be (N, 80, {MEL_STEP_SIZE}), got {mel_windows.shape}"
            )
        out = np.empty((len(crops), FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                stop = start + self.batch_size
                pred = self._model(
                    self._mel_tensor(mel_windows[start:stop]), self._face_tensor(crops[start:stop])
                )
                pred = pred.float().permute(0, 2, 3, 1).cpu().numpy() * 255.0
                # Truncation like upstream's astype(uint8) after *255.
                out[start:stop] = np.clip(pred, 0, 255).astype(np.uint8)
        return out


def active_frames(
    audio: np.ndarray,
    n_frames: int,
    fps: float = 25.0,
    sample_rate: int = 16_000,
    silence_dbfs: float = DEFAULT_SILENCE_DBFS,
) -> np.ndarray:
    """Bool per video frame: is there sound in the audio its mel window covers ([t, t+200 ms])?

    Frames whose window is silent keep the avatar's own mouth and skip the model entirely.
    ``audio`` is float in [-1, 1].
    """
    window = int(sample_rate * MEL_STEP_SIZE / MEL_FRAMES_PER_SECOND)
    threshold = 10.0 ** (silence_dbfs / 20.0)
    flags = np.zeros(n_frames, dtype=bool)
    for i in range(n_frames):
        start = int(round(i * sample_rate / fps))
        chunk = audio[start : start + window]
        if chunk.size:
            flags[i] = float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64)))) >= threshold
    return flags


def _ramp(n: int, lo: float, hi: float) -> np.ndarray:
    """Smoothstep from 0 at fraction ``lo`` to 1 at fraction ``hi`` along n pixels."""
    pos = (np.arange(n, dtype=np.float32) + 0.5) / n
    t = np.clip((pos - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def lower_face_mask(height: int, width: int) -> np.ndarray:
    """(H, W, 1) float32 blend weights: 1 over mouth and chin, 0 above the nose and at the
    box border, smooth in between (so no seam shows where the patch meets the frame)."""
    vertical = _ramp(height, 0.42, 0.62) * (1.0 - _ramp(height, 0.90, 1.0))
    horizontal = _ramp(width, 0.0, 0.14) * (1.0 - _ramp(width, 0.86, 1.0))
    return (vertical[:, None] * horizontal[None, :])[:, :, None]


def paste_back(frame: np.ndarray, patch: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Copy of ``frame`` with ``patch`` (96x96) resized into ``box`` (y1,y2,x1,x2) and feathered."""
    y1, y2, x1, x2 = (int(v) for v in box)
    out = frame.copy()
    h, w = y2 - y1, x2 - x1
    resized = cv2.resize(patch, (w, h)).astype(np.float32)
    region = out[y1:y2, x1:x2].astype(np.float32)
    mask = lower_face_mask(h, w)
    out[y1:y2, x1:x2] = np.clip(region + mask * (resized - region) + 0.5, 0, 255).astype(np.uint8)
    return out


def render_batch(
    generator: Wav2LipGenerator,
    avatar: Avatar,
    loop_indices: list[int],
    windows: np.ndarray,
    speaking: np.ndarray,
    backgrounds: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """BGR frames for one batch: loop frame ``loop_indices[k]`` with the mouth generated from
    ``windows[k]`` where ``speaking[k]``; silent frames skip the model and show the loop frame.
    ``backgrounds[k]`` (BGR, the avatar's size) replaces the loop frame as the picture the mouth
    goes into: a photo's idle-motion frame, so talking continues the picture shown while idle."""
    talking = [k for k in range(len(loop_indices)) if speaking[k]]
    patches: dict[int, np.ndarray] = {}
    if talking:
        crops = avatar.crops[[loop_indices[k] for k in talking]]
        patches = dict(zip(talking, generator.generate(crops, windows[talking]), strict=True))
    out = []
    for k, idx in enumerate(loop_indices):
        frame = avatar.frames[idx] if backgrounds is None else backgrounds[k]
        out.append(paste_back(frame, patches[k], avatar.boxes[idx]) if k in patches else frame)
    return out
