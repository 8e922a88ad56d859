"""Wav2Lip's step of a stored avatar: face box, pads, smoothing, crops, kept in the store entry."""

from __future__ import annotations

import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage import data

from services.avatar.library import default_avatar, open_store
from services.avatar.prepare import prepare_file
from wav2lip import avatar as avatar_mod
from wav2lip.avatar import AvatarOptions, from_store, pad_box, prepare_from_frames, smooth_boxes, step_name
from wav2lip.errors import AvatarError


def _astronaut(tmp_path: Path):
    store = open_store(str(tmp_path))
    entry = default_avatar(store, "")
    return store, entry


def test_default_avatar_face_is_found_and_cropped(tmp_path: Path) -> None:
    store, entry = _astronaut(tmp_path)
    avatar = from_store(store, entry, entry.face_finder(None, "bgr"), "haar")
    assert len(avatar) == 1 and avatar.frame_size == (512, 512)
    y1, y2, x1, x2 = avatar.boxes[0]
    # The astronaut's face sits around x 180..270, y 70..170 in the 512x512 photo.
    assert 150 < x1 < 200 and 250 < x2 < 300 and 40 < y1 < 100 and 150 < y2 < 200
    assert avatar.crops.shape == (1, 96, 96, 3) and avatar.crops.dtype == np.uint8
    # BGR order: the store's loop frame is RGB, the crop must equal a cv2 resize of the BGR face.
    bgr = cv2.cvtColor(np.asarray(entry.loop.frames[0]), cv2.COLOR_RGB2BGR)
    np.testing.assert_array_equal(avatar.crops[0], cv2.resize(bgr[y1:y2, x1:x2], (96, 96)))
    # The box is the store's face box (one detector rule), padded 10 px below.
    x, y, w, h = (int(v) for v in entry.faces[0])
    assert (y1, y2, x1, x2) == (y, min(512, y + h + 10), x, x + w)
    assert (Path(entry.path) / f"{step_name('haar')}.npz").is_file()


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


def test_no_face_gives_a_clear_error() -> None:
    wall = [np.full((200, 200, 3), 128, np.uint8)]
    with pytest.raises(AvatarError, match="no face found.*--box"):
        prepare_from_frames(wall, "wall.png", lambda frames: [None] * len(frames))


def test_a_missing_face_borrows_its_neighbour() -> None:
    frames = [np.full((100, 100, 3), i, np.uint8) for i in range(3)]
    found = [None, (10, 20, 30, 40), None]  # (x, y, w, h)
    avatar = prepare_from_frames(frames, "clip", lambda f: found, AvatarOptions(smooth=False))
    assert avatar.boxes.tolist() == [[20, 70, 10, 40]] * 3


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


def test_video_avatar_with_user_box_is_a_step_of_the_store_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = tmp_path / "idle.mp4"
    _write_video(video, 24)
    store = open_store(str(tmp_path / "cache"))
    entry = store.load(prepare_file(store, str(video)).id)
    options = AvatarOptions(box=(60, 180, 80, 180))
    first = from_store(store, entry, entry.face_finder(None, "bgr"), "haar", options)
    assert len(first) == len(entry.loop) == 24 - 8 and first.fps == 25.0  # the store's crossfaded loop
    assert first.crops.shape == (16, 96, 96, 3)
    np.testing.assert_array_equal(first.boxes[5], [60, 190, 80, 180])  # bottom pad 10
    steps = sorted(p.name for p in Path(entry.path).glob("wav2lip-*.npz"))
    assert steps == [f"{step_name('haar', options)}.npz"]

    def fail(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the store's step should have been used")

    monkeypatch.setattr(avatar_mod, "prepare_from_frames", fail)
    started = time.perf_counter()
    second = from_store(store, store.load(entry.id), entry.face_finder(None, "bgr"), "haar", options)
    assert time.perf_counter() - started < 2.0
    for name in ("frames", "boxes", "crops"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    # Other options (or another detector) are another step file of the same entry.
    monkeypatch.undo()
    from_store(store, entry, entry.face_finder(None, "bgr"), "haar", AvatarOptions())
    assert len(list(Path(entry.path).glob("wav2lip-*.npz"))) == 2
