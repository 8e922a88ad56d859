"""Load the avatar picture(s): the bundled default, a photo, or a short video loop.

Every loader returns RGB uint8 frames with even dimensions and a long side of at most 720 px,
because the WebRTC video encoders (VP8/H.264 in 4:2:0) need even sizes and the lip-sync stage's
per-frame cost grows with the pixel count. A video is resampled to the output frame rate so that
loop frame ``i`` is shown at exactly ``i / VIDEO_FPS`` seconds.
"""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np

from services.media import VIDEO_FPS

logger = logging.getLogger(__name__)

MAX_LONG_SIDE_PX = 720
MAX_VIDEO_S = 10.0
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")


class AvatarError(RuntimeError):
    """The avatar file is missing or cannot be read; the message names the path."""


def load_avatar(path: str) -> list[np.ndarray]:
    """Frames of the avatar at ``path`` ("" = the astronaut photo bundled with scikit-image)."""
    if not path:
        import skimage.data

        return [normalize_frame(np.ascontiguousarray(skimage.data.astronaut()))]
    if not os.path.isfile(path):
        raise AvatarError(
            f"avatar file {path!r} does not exist; set AVATAR_IMAGE to a photo (.png/.jpg) or a "
            "short video (.mp4/.webm/.mov), or leave it empty for the built-in astronaut"
        )
    suffix = os.path.splitext(path)[1].lower()
    if suffix in VIDEO_SUFFIXES:
        return _load_video(path)
    if suffix in PHOTO_SUFFIXES:
        return [_load_photo(path)]
    raise AvatarError(
        f"avatar file {path!r} has an unsupported type {suffix!r}; use one of "
        f"{', '.join(PHOTO_SUFFIXES + VIDEO_SUFFIXES)}"
    )


def normalize_frame(rgb: np.ndarray) -> np.ndarray:
    """Downscale so the long side is <= 720 px and crop to even dimensions."""
    h, w = rgb.shape[:2]
    scale = min(1.0, MAX_LONG_SIDE_PX / max(h, w))
    if scale < 1.0:
        w, h = max(2, round(w * scale)), max(2, round(h * scale))
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    # Crop one row/column rather than resize: an odd size is fixed without resampling the photo.
    return np.ascontiguousarray(rgb[: h - h % 2, : w - w % 2])


def _load_photo(path: str) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise AvatarError(f"avatar photo {path!r} could not be decoded (corrupt or not an image)")
    return normalize_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _load_video(path: str) -> list[np.ndarray]:
    import av

    decoded: list[tuple[float, np.ndarray]] = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise AvatarError(f"avatar video {path!r} has no video stream")
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                t_s = float(frame.time) if frame.time is not None else len(decoded) / VIDEO_FPS
                if t_s > MAX_VIDEO_S + 1.0 / VIDEO_FPS:
                    break
                decoded.append((t_s, normalize_frame(frame.to_ndarray(format="rgb24"))))
    except av.error.FFmpegError as exc:
        raise AvatarError(f"avatar video {path!r} could not be decoded: {exc}") from exc
    if not decoded:
        raise AvatarError(f"avatar video {path!r} contains no frames")
    frames = _resample(decoded)
    logger.info(
        "Avatar(%s): %d frames at %d fps, %dx%d",
        path, len(frames), VIDEO_FPS, frames[0].shape[1], frames[0].shape[0],
    )
    return frames


def _resample(decoded: list[tuple[float, np.ndarray]]) -> list[np.ndarray]:
    """Pick, for each output tick k/25 s, the latest decoded frame shown at that time."""
    t0 = decoded[0][0]
    times = np.array([t - t0 for t, _ in decoded])
    duration_s = min(MAX_VIDEO_S, times[-1] + 1.0 / VIDEO_FPS)
    n_out = max(1, int(round(duration_s * VIDEO_FPS)))
    ticks = np.arange(n_out) / VIDEO_FPS
    # A small tolerance so that a 25 fps source maps 1:1 despite rounding in its timestamps.
    picks = np.searchsorted(times, ticks + 1e-3, side="right") - 1
    return [decoded[max(0, int(i))][1] for i in picks]
