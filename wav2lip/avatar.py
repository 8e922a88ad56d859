"""Avatar preparation: a photo or short video -> frames, face boxes and 96x96 model crops.

Conventions (kept from upstream so the released weights see what they were trained on):
* colour order BGR everywhere inside this package (cv2 frames); callers convert at the edge;
* boxes are ``(y1, y2, x1, x2)`` in frame pixels;
* the face box gets ``pads = (top, bottom, left, right)`` (default ``(0, 10, 0, 0)``), is clipped
  to the frame, smoothed over a forward window of 5 frames, and the crop is squeezed to 96x96
  without keeping its aspect ratio.

The face is found with OpenCV's bundled Haar cascade (no detector weights to fetch), or taken
from a user-supplied box. A video avatar becomes a forward-only idle loop whose seam is hidden by
a cross-fade of the last frames into the first ones (no ping-pong, which makes motion run
backwards). ``load_or_prepare`` caches the result in an ``.npz`` keyed by the source's content
hash and settings for the standalone command line (``python -m wav2lip``); the services take
their Wav2Lip avatars from the avatar store instead (services/lipsync/avatar_steps.py), which
calls ``prepare_from_frames`` on the store's loop and faces.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from avatar_base.files import save_npz_atomically, update_with_file
from avatar_base.haar import HaarCascadeMissing, largest_face, load_cascade
from wav2lip.errors import AvatarError

logger = logging.getLogger(__name__)

FACE_SIZE = 96
DEFAULT_PADS = (0, 10, 0, 0)
SMOOTH_WINDOW = 5
DEFAULT_CROSSFADE_FRAMES = 8  # 320 ms at 25 fps
DEFAULT_MAX_FRAMES = 250  # 10 s at 25 fps: an idle loop, not a film (memory grows with length)
_CACHE_VERSION = 1
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True, slots=True)
class AvatarOptions:
    pads: tuple[int, int, int, int] = DEFAULT_PADS
    smooth: bool = True
    box: tuple[int, int, int, int] | None = None  # user-supplied (y1, y2, x1, x2)
    crossfade_frames: int = DEFAULT_CROSSFADE_FRAMES
    max_frames: int = DEFAULT_MAX_FRAMES


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


def _default_image_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _read_video_bgr(path: str, max_frames: int) -> tuple[list[np.ndarray], float]:
    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise AvatarError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else 25.0
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="bgr24"))
                if len(frames) >= max_frames:
                    logger.warning("Avatar(%s): using the first %d frames only", path, max_frames)
                    break
    except av.error.FFmpegError as exc:
        raise AvatarError(f"{path}: cannot decode as image or video: {exc}") from exc
    if not frames:
        raise AvatarError(f"{path}: the video has no frames")
    return frames, fps


def read_source(
    path: str, max_frames: int = DEFAULT_MAX_FRAMES
) -> tuple[list[np.ndarray], float, bool]:
    """(BGR frames, fps, is_still_image). ``""`` = the bundled astronaut photo."""
    if not path:
        return [_default_image_bgr()], 25.0, True
    if not os.path.isfile(path):
        raise AvatarError(f"avatar {path}: no such file (give a photo or a short video)")
    if path.lower().endswith(_IMAGE_SUFFIXES):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise AvatarError(f"{path}: not a readable image")
        return [image], 25.0, True
    frames, fps = _read_video_bgr(path, max_frames)
    return frames, fps, len(frames) == 1


def detect_face(
    frame_bgr: np.ndarray, detector: cv2.CascadeClassifier
) -> tuple[int, int, int, int] | None:
    """Largest frontal face as (y1, y2, x1, x2), or None."""
    face = largest_face(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY), detector)
    if face is None:
        return None
    x, y, w, h = face
    return y, y + h, x, x + w


def face_cascade() -> cv2.CascadeClassifier:
    """The frontal-face cascade, its absence an ``AvatarError`` (shared with MuseTalk)."""
    try:
        return load_cascade()
    except HaarCascadeMissing as exc:
        raise AvatarError(str(exc)) from exc


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


def _fill_missing(
    boxes: list[tuple[int, int, int, int] | None], source: str
) -> list[tuple[int, int, int, int]]:
    # A blink or a turned head can hide the face for a frame; borrow the nearest found box.
    found = [i for i, b in enumerate(boxes) if b is not None]
    if not found:
        raise AvatarError(
            f"avatar {source or 'astronaut'}: no face found; use a frontal photo, or give the face "
            "box yourself (--box y1 y2 x1 x2)"
        )
    if len(found) < len(boxes):
        logger.info(
            "Avatar(%s): face missed in %d of %d frames; reusing neighbours",
            source,
            len(boxes) - len(found),
            len(boxes),
        )
    filled = []
    for i, box in enumerate(boxes):
        if box is None:
            box = boxes[min(found, key=lambda j: abs(j - i))]
        filled.append(box)
    return filled


def crossfade_loop(
    frames: np.ndarray, boxes: np.ndarray, fade: int
) -> tuple[np.ndarray, np.ndarray]:
    """A forward loop of ``N - fade`` frames whose first ``fade`` frames blend from the frames
    that follow the loop's end into the loop's start, so the wrap (last -> first) continues the
    real motion and then eases back. Needs N > 2*fade; shorter inputs loop plainly."""
    n = len(frames)
    if fade <= 0 or n <= 2 * fade:
        return frames, boxes
    length = n - fade
    out_frames = frames[:length].copy()
    out_boxes = boxes[:length].astype(np.float64)
    for j in range(fade):
        w = (j + 1) / (fade + 1)  # weight of the loop's own frame
        out_frames[j] = cv2.addWeighted(frames[j], w, frames[length + j], 1.0 - w, 0.0)
        out_boxes[j] = w * boxes[j] + (1.0 - w) * boxes[length + j]
    return out_frames, out_boxes


def crop_faces(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    crops = np.empty((len(frames), FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    for i, (frame, (y1, y2, x1, x2)) in enumerate(zip(frames, boxes, strict=True)):
        crops[i] = cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE))
    return crops


FaceFinder = Callable[[list[np.ndarray]], list[tuple[int, int, int, int] | None]]


def prepare_avatar(source: str, options: AvatarOptions = AvatarOptions()) -> Avatar:
    """Read ``source`` (""= astronaut), find the face per frame and build the idle loop."""
    raw, fps, still = read_source(source, options.max_frames)
    return prepare_from_frames(raw, fps, still, source, options, crossfade=not still)


def prepare_from_frames(
    raw: list[np.ndarray],
    fps: float,
    still: bool,
    source: str,
    options: AvatarOptions = AvatarOptions(),
    crossfade: bool = False,
    find_faces: FaceFinder | None = None,
) -> Avatar:
    """The avatar from BGR frames already read (and, for the lip-sync service, already made
    into the shared loop, so ``crossfade`` is off). ``find_faces`` gives each frame's largest
    face as (x, y, w, h) or None; OpenCV's Haar cascade when not given."""
    height, width = raw[0].shape[:2]
    if options.box is not None:
        found: list[tuple[int, int, int, int] | None] = [options.box] * len(raw)
    elif find_faces is not None:
        found = [None if f is None else (f[1], f[1] + f[3], f[0], f[0] + f[2]) for f in find_faces(raw)]
    else:
        detector = face_cascade()
        # A still image gives one box; video frames each get their own.
        found = [detect_face(f, detector) for f in raw]
    boxes = np.stack(
        [pad_box(b, options.pads, height, width) for b in _fill_missing(found, source)]
    )
    if options.smooth:
        boxes = smooth_boxes(boxes)
    frames = np.stack(raw)
    if crossfade:
        frames, boxes = crossfade_loop(frames, boxes, options.crossfade_frames)
    int_boxes = np.rint(boxes).astype(np.int32)
    if np.any(int_boxes[:, 1] <= int_boxes[:, 0]) or np.any(int_boxes[:, 3] <= int_boxes[:, 2]):
        raise AvatarError(f"avatar {source or 'astronaut'}: empty face box {int_boxes[0].tolist()}")
    return Avatar(frames=frames, boxes=int_boxes, crops=crop_faces(frames, int_boxes), fps=fps)


def _cache_key(source: str, options: AvatarOptions, extra: str = "") -> str:
    digest = hashlib.sha256()
    digest.update(extra.encode())
    if source:
        update_with_file(digest, source)
    else:
        digest.update(b"skimage.data.astronaut")
    digest.update(repr((_CACHE_VERSION, options)).encode())
    return digest.hexdigest()[:32]


def save_avatar(avatar: Avatar, path: str) -> None:
    save_npz_atomically(path, frames=avatar.frames, boxes=avatar.boxes, crops=avatar.crops, fps=np.float64(avatar.fps))


def load_avatar(path: str) -> Avatar:
    with np.load(path, allow_pickle=False) as data:
        return Avatar(
            frames=data["frames"], boxes=data["boxes"], crops=data["crops"], fps=float(data["fps"])
        )


def load_or_prepare(
    source: str,
    cache_dir: str,
    options: AvatarOptions = AvatarOptions(),
    frames: list[np.ndarray] | None = None,
    find_faces: FaceFinder | None = None,
    variant: str = "",
) -> Avatar:
    """Prepared avatar from ``cache_dir`` when the same source+options were seen before.

    With ``frames`` (BGR, the lip-sync service's shared, already looped avatar), those are used
    instead of reading ``source``; ``variant`` names how they and the faces were made (loader
    version, face detector), so a change of either rebuilds the cache.
    """
    if source and not os.path.isfile(source):
        raise AvatarError(f"avatar {source}: no such file (give a photo or a short video)")

    def build() -> Avatar:
        if frames is None:
            return prepare_avatar(source, options)
        return prepare_from_frames(frames, 25.0, len(frames) == 1, source, options, False, find_faces)

    if not cache_dir:
        return build()
    os.makedirs(cache_dir, exist_ok=True)
    cache_path = os.path.join(cache_dir, f"wav2lip-avatar-{_cache_key(source, options, variant)}.npz")
    if os.path.isfile(cache_path):
        try:
            avatar = load_avatar(cache_path)
            logger.info(
                "Avatar(%s): loaded %d frames from cache %s",
                source or "astronaut",
                len(avatar),
                cache_path,
            )
            return avatar
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("Avatar cache %s unreadable (%s); rebuilding", cache_path, exc)
    avatar = build()
    save_avatar(avatar, cache_path)
    logger.info(
        "Avatar(%s): prepared %d frames, cached in %s",
        source or "astronaut",
        len(avatar),
        cache_path,
    )
    return avatar
