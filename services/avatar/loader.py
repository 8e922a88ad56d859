"""Load the avatar picture(s): the bundled default, a photo, or a short video loop.

Every loader returns RGB uint8 frames with even dimensions and a long side of at most 720 px,
because the WebRTC video encoders (VP8/H.264 in 4:2:0) need even sizes and the lip-sync stage's
per-frame cost grows with the pixel count. A video is resampled to the output frame rate so that
loop frame ``i`` is shown at exactly ``i / VIDEO_FPS`` seconds.

The file's type comes from its content (``sniff``), never from its name; a photo's header is
checked for a decompression bomb before it decodes. A big JPEG is decoded at a reduced scale
(libjpeg's DCT scaling: a 12 MP photo decodes 16x fewer pixels), since it is shrunk to 720 px.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import cv2
import numpy as np

from services.avatar.errors import AvatarError
from services.avatar.sniff import (
    MAX_VIDEO_PIXELS,
    MAX_VIDEO_S,
    PHOTO_KINDS,
    VIDEO_KINDS,
    check_image_header,
    sniff_file,
)
from services.media import VIDEO_FPS

logger = logging.getLogger(__name__)

MAX_LONG_SIDE_PX = 720
PHOTO_SUFFIXES = tuple(PHOTO_KINDS.values()) + (".jpeg",)
VIDEO_SUFFIXES = tuple(VIDEO_KINDS.values()) + (".mov", ".mkv")

Progress = Callable[[float], None]  # 0..1 of the decoding


def load_avatar(path: str, progress: Progress | None = None) -> list[np.ndarray]:
    """Frames of the avatar at ``path`` ("" = the astronaut photo bundled with scikit-image)."""
    if not path:
        return [astronaut()]
    if not os.path.isfile(path):
        raise AvatarError(
            "missing",
            f"avatar file {path!r} does not exist; set AVATAR_IMAGE to a photo (.png/.jpg) or a "
            "short video (.mp4/.webm/.mov), or leave it empty for the built-in astronaut",
        )
    try:
        if sniff_file(path).photo:
            return [load_photo(path)]
        return load_video(path, progress)
    except AvatarError as exc:  # a server setting: name the file (uploads never show a path)
        raise AvatarError(exc.code, f"avatar file {path!r}: {exc}") from exc


def astronaut() -> np.ndarray:
    import skimage.data

    return normalize_frame(np.ascontiguousarray(skimage.data.astronaut()))


def normalize_frame(rgb: np.ndarray) -> np.ndarray:
    """Downscale so the long side is <= 720 px and crop to even dimensions."""
    h, w = rgb.shape[:2]
    scale = min(1.0, MAX_LONG_SIDE_PX / max(h, w))
    if scale < 1.0:
        w, h = max(2, round(w * scale)), max(2, round(h * scale))
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    # Crop one row/column rather than resize: an odd size is fixed without resampling the photo.
    return np.ascontiguousarray(rgb[: h - h % 2, : w - w % 2])


def load_photo(path: str) -> np.ndarray:
    width, height = check_image_header(path)
    flags = cv2.IMREAD_COLOR
    for reduced, factor in ((cv2.IMREAD_REDUCED_COLOR_8, 8), (cv2.IMREAD_REDUCED_COLOR_4, 4), (cv2.IMREAD_REDUCED_COLOR_2, 2)):
        if max(width, height) // factor >= MAX_LONG_SIDE_PX:
            flags = reduced
            break
    bgr = cv2.imread(path, flags)
    if bgr is None:
        raise AvatarError("corrupt", "the photo could not be decoded: the file is damaged or not an image")
    return normalize_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def load_video(path: str, progress: Progress | None = None, max_s: float = MAX_VIDEO_S) -> list[np.ndarray]:
    import av

    decoded: list[tuple[float, np.ndarray]] = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise AvatarError("corrupt", "the video has no picture track")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame and slice threads: both cores decode
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > MAX_VIDEO_PIXELS:
                raise AvatarError("too_many_pixels", f"the video is {width}x{height}; at most 4K (3840x2160)")
            duration_s = _duration_s(container, stream)
            if duration_s is not None and duration_s > max_s:
                raise AvatarError("too_long", f"the video is {duration_s:.1f} s long; at most {max_s:.0f} s (a short idle loop)")
            size = _normalized_size(width, height)
            for frame in container.decode(stream):
                t_s = float(frame.time) if frame.time is not None else len(decoded) / VIDEO_FPS
                if t_s > max_s:
                    raise AvatarError("too_long", f"the video is longer than {max_s:.0f} s (a short idle loop)")
                # libswscale shrinks while converting: no full-size RGB copy of a 1080p frame.
                rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                decoded.append((t_s, normalize_frame(rgb)))
                if progress is not None and duration_s:
                    progress(min(1.0, t_s / duration_s))
    except av.error.FFmpegError as exc:
        raise AvatarError("corrupt", "the video could not be decoded: the file is damaged or uses an unknown codec") from exc
    if not decoded:
        raise AvatarError("corrupt", "the video contains no frames")
    frames = _resample(decoded)
    logger.info("Avatar(%s): %d frames at %d fps, %dx%d", path, len(frames), VIDEO_FPS, frames[0].shape[1], frames[0].shape[0])
    return frames


def _duration_s(container, stream) -> float | None:  # noqa: ANN001 (PyAV objects)
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _normalized_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_LONG_SIDE_PX / max(width, height, 1))
    return max(2, round(width * scale)), max(2, round(height * scale))


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
