"""MuseTalk's realtime step: batched UNet at timestep 0 + VAE decode, and the masked paste-back.

Only the UNet and the VAE decoder run while the avatar talks; the avatar's latents and blend
masks were computed once (``musetalk.avatar``). Everything is RGB at the numpy boundary (upstream
converts to BGR for OpenCV; we never need to).

Tensor conventions:
* latents in: (N, 8, 32, 32) = VAE(masked crop) ⊕ VAE(full crop), already scaled by 0.18215;
* audio in: (N, 50, 384) whisper windows, plus the sinusoidal position table over the 50 tokens;
* faces out: (N, 256, 256, 3) uint8 RGB, then resized into the face box and blended.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from musetalk.models import VAE_SCALING_FACTOR, MuseTalkModels, sinusoidal_encoding

FACE_SIZE = 256


def _to_vae_input(crops_rgb: np.ndarray, lower_half_masked: bool) -> torch.Tensor:
    """(N, 256, 256, 3) uint8 -> (N, 3, 256, 256) in [-1, 1]; the masked variant blacks out the
    lower half *before* normalising (so it becomes -1), as MuseTalk trained it."""
    x = torch.from_numpy(np.ascontiguousarray(crops_rgb)).permute(0, 3, 1, 2).float() / 255.0
    if lower_half_masked:
        x[:, :, FACE_SIZE // 2 :] = 0.0
    return x * 2.0 - 1.0


@torch.inference_mode()
def encode_latents(
    models: MuseTalkModels, crops_rgb: np.ndarray, batch_size: int = 8,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """(N, 256, 256, 3) uint8 RGB crops -> (N, 8, 32, 32) float32 UNet input latents.

    Uses the posterior mean rather than a sample (upstream samples once at preparation time), so
    the same avatar always gives the same latents and the cache is reproducible.
    """
    device, dtype = models.precision.device, models.precision.dtype
    out = []
    for start in range(0, len(crops_rgb), batch_size):
        crops = crops_rgb[start : start + batch_size]
        halves = []
        for masked in (True, False):
            x = _to_vae_input(crops, masked).to(device, dtype)
            halves.append(models.vae.encode(x).latent_dist.mode() * VAE_SCALING_FACTOR)
        out.append(torch.cat(halves, dim=1).float().cpu().numpy())
        if progress is not None:
            progress(min(1.0, (start + batch_size) / len(crops_rgb)))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 8, 32, 32), dtype=np.float32)


class MuseTalkRenderer:
    """(latents, audio windows) -> 256x256 RGB faces, one UNet + VAE-decode pass per batch."""

    def __init__(self, models: MuseTalkModels, tokens_per_frame: int, hidden_dim: int) -> None:
        self._models = models
        p = models.precision
        self._pe = sinusoidal_encoding(tokens_per_frame, hidden_dim).to(p.device, p.dtype)
        # Timestep 0 always: MuseTalk is one inpainting step, not a diffusion schedule.
        self._timestep = torch.zeros(1, dtype=torch.long, device=p.device)

    @property
    def models(self) -> MuseTalkModels:
        return self._models

    @torch.inference_mode()
    def generate(self, latents: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """(N, 8, 32, 32) float32 + (N, T, D) float32 -> (N, 256, 256, 3) uint8 RGB."""
        if len(latents) != len(audio):
            raise ValueError(f"{len(latents)} latents but {len(audio)} audio windows")
        if audio.shape[1:] != tuple(self._pe.shape):
            expected = tuple(self._pe.shape)
            raise ValueError(f"audio windows must be (N, *{expected}), got {audio.shape}")
        p = self._models.precision
        x = torch.from_numpy(np.ascontiguousarray(latents)).to(p.device, p.dtype)
        cond = torch.from_numpy(np.ascontiguousarray(audio)).to(p.device, p.dtype) + self._pe
        pred = self._models.unet(x, self._timestep, encoder_hidden_states=cond).sample
        image = self._models.vae.decode(pred / VAE_SCALING_FACTOR).sample
        image = (image.float() / 2.0 + 0.5).clamp(0.0, 1.0).permute(0, 2, 3, 1)
        return (image * 255.0).round().to(torch.uint8).cpu().numpy()


def blend_face(
    frame: np.ndarray, face: np.ndarray, face_box: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Copy of ``frame`` with the 256x256 ``face`` resized into ``face_box`` (x1, y1, x2, y2)
    and blended through ``mask`` (uint8, in the same face-box coordinates as ``face``)."""
    x1, y1, x2, y2 = (int(v) for v in face_box)
    w, h = x2 - x1, y2 - y1
    out = frame.copy()
    resized = cv2.resize(face, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    weight = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)[..., None]
    region = out[y1:y2, x1:x2].astype(np.float32)
    blended = region + (weight / 255.0) * (resized - region)
    out[y1:y2, x1:x2] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out
