"""Avatar preparation: face box, pads, smoothing, crops, idle loop, .npz cache."""

from __future__ import annotations

import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage import data

from wav2lip import avatar as avatar_mod
from wav2lip.avatar import (
    AvatarOptions,
    crossfade_loop,
    load_or_prepare,
    pad_box,
    prepare_avatar,
    smooth_boxes,
)
from wav2lip.errors import AvatarError


def test_default_avatar_face_is_found_and_cropped() -> None:
    avatar = prepare_avatar("")
    assert len(avatar) == 1 and avatar.frame_size == (512, 512)
    y1, y2, x1, x2 = avatar.boxes[0]
    # The astronaut's face sits around x 180..270, y 70..170 in the 512x512 photo.
    assert 150 < x1 < 200 and 250 < x2 < 300 and 40 < y1 < 100 and 150 < y2 < 200
    assert avatar.crops.shape == (1, 96, 96, 3) and avatar.crops.dtype == np.uint8
    # BGR order: the photo is RGB, the crop must equal a cv2 resize of the BGR face.
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    np.testing.assert_array_equal(avatar.crops[0], cv2.resize(bgr[y1:y2, x1:x2], (96, 96)))


def test_pads_are_applied_and_clipped() -> None:
    np.testing.assert_array_equal(
        pad_box((10, 50, 5, 40), (0, 10, 0, 0), 100, 100), [10, 60, 5, 40]
    )
    np.testing.assert_array_equal(
        pad_box((10, 95, 5, 40), (20, 10, 8, 70), 100, 100), [0, 100, 0, 100]
    )


def test_smoothing_is_a_forward_window_of_five() -> None:
    boxes = np.arange(8, dtype=np.float64)[:, None].repeat(4, axis=1)
    smoothed = smooth_boxes(boxes)
    # Box i = mean of i..i+4; the last windows reuse the final five (mean of 3..7 = 5).
    np.testing.assert_allclose(smoothed[:, 0], [2, 3, 4, 5, 5, 5, 5, 5])


def test_crossfade_loop_hides_the_seam() -> None:
    frames = np.stack([np.full((4, 4, 3), 10 * i, np.uint8) for i in range(20)])
    boxes = np.zeros((20, 4))
    looped, _ = crossfade_loop(frames, boxes, fade=4)
    assert len(looped) == 16  # forward only: no reversed frames
    values = looped[:, 0, 0, 0].astype(int)
    # A plain loop of all 20 frames would jump 190 -> 0 at the seam; the cross-fade spreads the
    # difference over the fade, so no step (seam included) is much larger than the real motion.
    steps = np.abs(np.diff(np.append(values, values[0])))
    assert steps.max() <= 25, values
    assert values[4:].tolist() == [40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150]


def test_no_face_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "wall.png"
    cv2.imwrite(str(path), np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(AvatarError, match="no face found.*--box"):
        prepare_avatar(str(path))


def test_missing_source_is_named(tmp_path: Path) -> None:
    with pytest.raises(AvatarError, match="nothing.mp4: no such file"):
        load_or_prepare(str(tmp_path / "nothing.mp4"), str(tmp_path))


def _write_video(path: Path, n_frames: int) -> None:
    base = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[:256, 96:352]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for i in range(n_frames):
            frame = np.roll(base, i, axis=1)  # slow pan, so frames differ
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_video_avatar_with_user_box_and_cache_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = tmp_path / "idle.mp4"
    _write_video(video, 24)
    options = AvatarOptions(box=(60, 180, 80, 180), crossfade_frames=4)
    first = load_or_prepare(str(video), str(tmp_path / "cache"), options)
    assert len(first) == 20 and first.fps == 25.0
    assert first.frames.shape == (20, 256, 256, 3) and first.crops.shape == (20, 96, 96, 3)
    np.testing.assert_array_equal(first.boxes[5], [60, 190, 80, 180])  # bottom pad 10
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1

    def fail(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(avatar_mod, "prepare_avatar", fail)
    started = time.perf_counter()
    second = load_or_prepare(str(video), str(tmp_path / "cache"), options)
    assert time.perf_counter() - started < 1.0
    for name in ("frames", "boxes", "crops"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    # Different options (or a different file) are a different cache entry.
    monkeypatch.undo()
    load_or_prepare(
        str(video),
        str(tmp_path / "cache"),
        AvatarOptions(box=(60, 180, 80, 180), crossfade_frames=0),
    )
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
