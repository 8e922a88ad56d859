"""Wav2Lip's own step of an avatar: padded, smoothed face boxes and 96x96 model crops per frame.

Conventions (kept from upstream so the released weights see what they were trained on):
* colour order BGR everywhere inside this package (cv2 frames); callers convert at the edge;
* boxes are ``(y1, y2, x1, x2)`` in frame pixels;
* the face box gets ``pads = (top, bottom, left, right)`` (default ``(0, 10, 0, 0)``), is clipped
  to the frame, smoothed over a forward window of 5 frames, and the crop is squeezed to 96x96
  without keeping its aspect ratio.

The avatar itself (reading and normalising the photo or video, the idle loop, the face of every
frame by the one detector setting, checks) is the avatar store's (services/avatar/store.py);
this module only adds Wav2Lip's step on top, kept in the store entry by ``from_store``. Both
the lip-sync service and ``python -m wav2lip`` take their avatars that way: one loader, one
detector choice, one cache layout. Nothing here imports the store: ``from_store`` takes it and
the entry as arguments.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from avatar_base.faces import fill_from_neighbours
from wav2lip.errors import AvatarError

logger = logging.getLogger(__name__)

FACE_SIZE = 96
DEFAULT_PADS = (0, 10, 0, 0)
SMOOTH_WINDOW = 5
STEP_VERSION = 1

# Each frame's largest face as (x, y, w, h), or None (the store's boxes, or a detector's).
FaceFinder = Callable[[list[np.ndarray]], list[tuple[int, int, int, int] | None]]


@dataclass(frozen=True, slots=True)
class AvatarOptions:
    pads: tuple[int, int, int, int] = DEFAULT_PADS
    smooth: bool = True
    box: tuple[int, int, int, int] | None = None  # user-supplied (y1, y2, x1, x2)


@dataclass(frozen=True, slots=True)
class Avatar:
    """An idle loop: ``frames[i]`` (BGR), its face ``boxes[i]`` and model input ``crops[i]``."""

    frames: np.ndarray  # (N, H, W, 3) uint8 BGR
    boxes: np.ndarray  # (N, 4) int32 (y1, y2, x1, x2)
    crops: np.ndarray  # (N, 96, 96, 3) uint8 BGR
    fps: float

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def pad_box(
    box: tuple[int, int, int, int], pads: tuple[int, int, int, int], height: int, width: int
) -> np.ndarray:
    y1, y2, x1, x2 = box
    top, bottom, left, right = pads
    return np.array(
        [max(0, y1 - top), min(height, y2 + bottom), max(0, x1 - left), min(width, x2 + right)],
        dtype=np.float64,
    )


def smooth_boxes(boxes: np.ndarray, window: int = SMOOTH_WINDOW) -> np.ndarray:
    """Box i = mean of boxes i..i+window-1; the last ones reuse the final window (as upstream,
    but computed from the unsmoothed boxes so the result does not depend on update order)."""
    n = len(boxes)
    if n <= window:
        return np.repeat(boxes.mean(axis=0, keepdims=True), n, axis=0)
    out = np.empty_like(boxes)
    for i in range(n):
        start = min(i, n - window)
        out[i] = boxes[start : start + window].mean(axis=0)
    return out


def crop_faces(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    crops = np.empty((len(frames), FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    for i, (frame, (y1, y2, x1, x2)) in enumerate(zip(frames, boxes, strict=True)):
        crops[i] = cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE))
    return crops


def prepare_from_frames(
    raw: list[np.ndarray],
    source: str,
    find_faces: FaceFinder,
    options: AvatarOptions = AvatarOptions(),
    progress: Callable[[float], None] | None = None,
) -> Avatar:
    """Wav2Lip's boxes and crops of BGR loop frames (the store's), their faces from
    ``find_faces`` unless the options give a fixed box."""
    height, width = raw[0].shape[:2]
    if options.box is not None:
        found: list[tuple[int, int, int, int] | None] = [options.box] * len(raw)
    else:
        found = [None if f is None else (f[1], f[1] + f[3], f[0], f[0] + f[2]) for f in find_faces(raw)]
    if progress is not None:
        progress(0.5)
    filled = fill_from_neighbours(found)
    if filled is None:
        raise AvatarError(f"avatar {source}: no face found; use a frontal photo, or give the face box yourself "
                          "(--box y1 y2 x1 x2)")
    boxes = np.stack([pad_box(b, options.pads, height, width) for b in filled])
    if options.smooth:
        boxes = smooth_boxes(boxes)
    frames = np.stack(raw)
    int_boxes = np.rint(boxes).astype(np.int32)
    if np.any(int_boxes[:, 1] <= int_boxes[:, 0]) or np.any(int_boxes[:, 3] <= int_boxes[:, 2]):
        raise AvatarError(f"avatar {source}: empty face box {int_boxes[0].tolist()}")
    avatar = Avatar(frames=frames, boxes=int_boxes, crops=crop_faces(frames, int_boxes), fps=25.0)
    if progress is not None:
        progress(1.0)
    return avatar


def step_name(detector: str, options: AvatarOptions = AvatarOptions()) -> str:
    """The store file of the step: what its result depends on (the detector, non-default options)."""
    name = f"wav2lip-v{STEP_VERSION}-{detector}"
    if options != AvatarOptions():
        name += "-" + hashlib.sha256(repr(options).encode()).hexdigest()[:10]
    return name


def from_store(
    store: Any,
    entry: Any,
    find_faces: FaceFinder,
    detector: str,
    options: AvatarOptions = AvatarOptions(),
    progress: Callable[[float], None] | None = None,
) -> Avatar:
    """Wav2Lip's avatar of an avatar-store entry (``services.avatar.store``: an ``AvatarStore``
    and a ``PreparedAvatar``): the entry's loop frames, its boxes and crops from the entry's
    step file, built now and kept there (atomically) the first time."""
    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in entry.loop.frames]

    def build() -> dict[str, np.ndarray]:
        prepared = prepare_from_frames(bgr, entry.id, find_faces, options, progress)
        return {"boxes": prepared.boxes, "crops": prepared.crops}

    arrays = store.step(entry, step_name(detector, options), build)
    return Avatar(frames=np.stack(bgr), boxes=arrays["boxes"], crops=arrays["crops"], fps=25.0)
