"""MuseTalk avatar preparation: face boxes, 256x256 crops, UNet latents and blend masks.

Conventions (MuseTalk's): boxes are ``(x1, y1, x2, y2)`` in frame pixels; frames are RGB.

Per loop frame we keep:
* ``face_boxes``: the region the generated 256x256 face is resized into. Upstream derives it
  from 68 face landmarks (jaw to chin, and as far above the nose as the chin is below it) plus
  10 px below the chin. We have no landmark weights, so we map the avatar store's face box
  (OpenCV's Haar rule, or S3FD by the one detector setting) onto that region (Haar boxes stop short of the chin and are wider than the jaw line);
* ``crop_boxes``: a square 1.5x the face box's long side around its centre (upstream's
  ``get_crop_box``), only used to shape the blend mask;
* ``latents``: VAE(lower-half-masked crop) ⊕ VAE(full crop), (8, 32, 32);
* ``masks``: upstream blends through a face-parsing mask restricted to the face box, with the
  upper 50 % of the crop box zeroed and a Gaussian blur with a kernel of ~10 % of the crop. Face
  parsing weights are not available here, so the parsing mask is replaced by the ellipse
  inscribed in the face box (cheeks, mouth and chin; no background corners); the rest is the
  same. Stored as uint8 256x256 in face-box coordinates, i.e. aligned with the generated face.

The frames come from the lip-sync service's shared avatar (``services.avatar``: normalised,
25 fps, a forward loop with a crossfaded wrap), the same pictures the gateway shows while idle;
running frame i is loop frame i % N for every engine. The avatar store keeps the result
(services/lipsync/avatar_steps.py: a step named for the detector and the VAE weights).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from avatar_base.faces import fill_from_neighbours
from musetalk.errors import MuseTalkAvatarError
from musetalk.inference import FACE_SIZE, encode_latents
from musetalk.models import MuseTalkModels

logger = logging.getLogger(__name__)

FaceFinder = Callable[[list[np.ndarray]], list[tuple[int, int, int, int] | None]]
CROP_EXPAND = 1.5
UPPER_BOUNDARY_RATIO = 0.5
BLUR_FRACTION = 0.1
EXTRA_MARGIN_PX = 10  # upstream v1.5 extends the box this far below the chin


@dataclass(frozen=True, slots=True)
class MuseTalkAvatar:
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB, the unique frames of the loop
    face_boxes: np.ndarray  # (N, 4) int32 (x1, y1, x2, y2)
    crop_boxes: np.ndarray  # (N, 4) int32 (x1, y1, x2, y2), may reach past the frame
    latents: np.ndarray  # (N, 8, 32, 32) float32
    masks: np.ndarray  # (N, 256, 256) uint8, face-box coordinates

    def __len__(self) -> int:
        """Length of the idle cycle: the forward loop."""
        return len(self.frames)

    def loop_index(self, index: int) -> int:
        """Stored frame shown at running frame ``index`` (the shared forward loop)."""
        return index % len(self.frames)

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def face_box_from_haar(haar: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """Haar (x, y, w, h) -> MuseTalk-like face box (x1, y1, x2, y2), clipped to the frame.

    Haar boxes run from the forehead to about the lower lip/chin and are a little wider than the
    jaw; the landmark box upstream uses spans jaw to jaw and brow to chin (+10 px).
    """
    x, y, w, h = haar
    x1 = x + 0.06 * w
    x2 = x + 0.94 * w
    y1 = y + 0.08 * h
    y2 = y + 1.06 * h + EXTRA_MARGIN_PX
    box = np.rint([max(0, x1), max(0, y1), min(width, x2), min(height, y2)]).astype(np.int32)
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        raise MuseTalkAvatarError(f"face box {box.tolist()} is too small to animate")
    return box


def crop_box_for(face_box: np.ndarray) -> np.ndarray:
    """Square box ``CROP_EXPAND`` times the face box's long side around its centre."""
    x1, y1, x2, y2 = (int(v) for v in face_box)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    half = int(max(x2 - x1, y2 - y1) // 2 * CROP_EXPAND)
    return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.int32)


def blend_mask(face_box: np.ndarray, crop_box: np.ndarray) -> np.ndarray:
    """(256, 256) uint8 blend weights in face-box coordinates (see module docstring)."""
    fx1, fy1, fx2, fy2 = (int(v) for v in face_box)
    cx1, cy1, cx2, cy2 = (int(v) for v in crop_box)
    side = cx2 - cx1
    canvas = np.zeros((cy2 - cy1, side), dtype=np.uint8)
    ox, oy = fx1 - cx1, fy1 - cy1
    fw, fh = fx2 - fx1, fy2 - fy1
    center = (ox + fw // 2, oy + fh // 2)
    cv2.ellipse(canvas, center, (fw // 2, fh // 2), 0, 0, 360, 255, thickness=-1)
    # Restrict to the face box (the ellipse already is) and drop the upper half of the crop box:
    # eyes and brows stay the avatar's own, only the mouth region is regenerated.
    canvas[: int(canvas.shape[0] * UPPER_BOUNDARY_RATIO)] = 0
    kernel = int(BLUR_FRACTION * side // 2 * 2) + 1
    canvas = cv2.GaussianBlur(canvas, (kernel, kernel), 0)
    face_part = canvas[oy : oy + fh, ox : ox + fw]
    return cv2.resize(face_part, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)


def face_crop(frame_rgb: np.ndarray, face_box: np.ndarray) -> np.ndarray:
    """256x256 crop of the face box (squeezed like upstream; Lanczos as upstream)."""
    x1, y1, x2, y2 = (int(v) for v in face_box)
    crop = frame_rgb[y1:y2, x1:x2]
    return cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LANCZOS4)


def prepare_avatar(
    source: str,
    frames_rgb: list[np.ndarray],
    models: MuseTalkModels,
    batch_size: int,
    find_faces: FaceFinder,
    progress: Callable[[float], None] | None = None,
) -> MuseTalkAvatar:
    """Latents and masks of the avatar's loop frames (RGB); ``find_faces`` gives each frame's
    largest face as (x, y, w, h) or None (the avatar store's boxes, or its detector's)."""
    frames = np.stack(frames_rgb)
    height, width = frames.shape[1:3]
    haar = fill_from_neighbours(list(find_faces(list(frames))))
    if haar is None:
        raise MuseTalkAvatarError(f"avatar {source or 'astronaut'}: no face found; use a clear frontal photo or video")
    face_boxes = np.stack([face_box_from_haar(b, height, width) for b in haar])
    crop_boxes = np.stack([crop_box_for(b) for b in face_boxes])
    crops = np.stack([face_crop(f, b) for f, b in zip(frames, face_boxes, strict=True)])
    masks = np.stack([blend_mask(f, c) for f, c in zip(face_boxes, crop_boxes, strict=True)])
    latents = encode_latents(models, crops, batch_size, progress)
    return MuseTalkAvatar(frames, face_boxes, crop_boxes, latents, masks)
