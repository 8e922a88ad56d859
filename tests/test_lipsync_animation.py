"""The weight-free animation engine: geometry, warp, blink, idle life, envelope, avatar loading."""

from __future__ import annotations

import math
import time

import av
import cv2
import numpy as np
import pytest
import skimage.data

from services.avatar import AvatarError, load_avatar
from services.avatar.animation import FaceAnimator, MouthEnvelope
from services.lipsync.animation_engine import AnimationEngine
from services.avatar.face_geometry import detect_face_geometry
from services.media import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def animator(photo: np.ndarray) -> FaceAnimator:
    return FaceAnimator(photo)


def _region(img: np.ndarray, cx: float, cy: float, half_w: float, half_h: float) -> np.ndarray:
    return img[int(cy - half_h) : int(cy + half_h), int(cx - half_w) : int(cx + half_w)].astype(
        np.float32
    )


def _mouth(img: np.ndarray, a: FaceAnimator) -> np.ndarray:
    g = a.geometry
    return _region(img, g.mouth_x, g.lip_line_y + 0.1 * g.mouth_width, 0.5 * g.mouth_width,
                   0.3 * g.mouth_width)


def _eyes(img: np.ndarray, a: FaceAnimator) -> np.ndarray:
    g = a.geometry
    return np.concatenate([
        _region(img, e.center_x, e.center_y, 0.5 * e.width, e.height) for e in (g.left_eye, g.right_eye)
    ], axis=1)


def _tone(n_samples: int, dbfs: float) -> np.ndarray:
    t = np.arange(n_samples) / SAMPLE_RATE
    amp = 32767 * 10 ** (dbfs / 20) * math.sqrt(2)
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def test_geometry_found_on_the_astronaut(photo: np.ndarray) -> None:
    g = detect_face_geometry(photo)
    assert g.detected
    fx, fy, fw, fh = g.face_box
    # Hand-measured on the photo: mouth centre ~(225, 148), eyes ~(203, 100) and (246, 103).
    assert abs(g.mouth_x - 225) < 8 and abs(g.lip_line_y - 148) < 6
    assert 35 < g.mouth_width < 60
    assert abs(g.left_eye.center_x - 203) < 6 and abs(g.left_eye.center_y - 100) < 5
    assert abs(g.right_eye.center_x - 246) < 6 and abs(g.right_eye.center_y - 103) < 5
    assert g.left_eye.center_y < g.lip_line_y < g.chin_y <= fy + 1.3 * fh
    assert g.lip_curve > 0  # she smiles


def test_geometry_falls_back_to_proportions(caplog: pytest.LogCaptureFixture) -> None:
    blank = np.full((240, 320, 3), 128, np.uint8)
    g = detect_face_geometry(blank)
    assert not g.detected
    assert "No frontal face" in caplog.text
    assert 0 < g.left_eye.center_x < g.mouth_x < g.right_eye.center_x < 320
    assert g.left_eye.center_y < g.lip_line_y < g.chin_y < 240
    # The animator still works on it.
    assert FaceAnimator(blank, g).render(0.8, 0.3).shape == blank.shape


def test_render_shape_and_dtype(animator: FaceAnimator, photo: np.ndarray) -> None:
    for openness in (0.0, 0.5, 1.0):
        out = animator.render(openness, 0.5)
        assert out.shape == photo.shape and out.dtype == np.uint8


def test_openness_moves_the_mouth_not_the_eyes(animator: FaceAnimator) -> None:
    t = 0.5  # no blink this early
    assert animator.blink_closure(t) == 0.0
    closed, half, open_ = (animator.render(o, t) for o in (0.0, 0.5, 1.0))
    d_half = np.abs(_mouth(half, animator) - _mouth(closed, animator)).mean()
    d_open = np.abs(_mouth(open_, animator) - _mouth(closed, animator)).mean()
    assert d_open > d_half > 3.0
    assert np.abs(_eyes(open_, animator) - _eyes(closed, animator)).max() < 1.0
    # The open mouth holds a dark cavity.
    assert _mouth(open_, animator).mean() < _mouth(closed, animator).mean() - 15


def test_blink_closes_the_eyes_not_the_mouth(animator: FaceAnimator) -> None:
    peak = animator.blink_starts_s[0] + 0.06
    assert animator.blink_closure(peak) > 0.9
    before = animator.blink_starts_s[0] - 0.02  # sway barely moves in 80 ms
    assert animator.blink_closure(before) == 0.0
    opened, blinking = animator.render(0.0, before), animator.render(0.0, peak)
    assert np.abs(_eyes(blinking, animator) - _eyes(opened, animator)).mean() > 4.0
    # Only sway (a fraction of a pixel in 80 ms) separates the mouths.
    assert np.abs(_mouth(blinking, animator) - _mouth(opened, animator)).mean() < 1.0


def test_blinks_recur_every_three_to_six_seconds(animator: FaceAnimator) -> None:
    gaps = np.diff(animator.blink_starts_s)
    assert gaps.min() >= 3.0 and gaps.max() <= 6.0
    closed_s = sum(animator.blink_closure(i * 0.01) > 0.5 for i in range(2000)) * 0.01
    assert 0.05 <= closed_s <= 0.5  # a few blinks of ~150 ms in 20 s, each closed for a moment


def test_idle_is_alive_but_stays_the_photo(animator: FaceAnimator, photo: np.ndarray) -> None:
    frames = [animator.render(0.0, i * 0.04) for i in range(0, 100, 10)]
    for a, b in zip(frames, frames[1:]):
        assert not np.array_equal(a, b)
    for f in frames:
        # About a pixel of sway/breath over a textured photo: a small mean difference.
        diff = np.abs(f.astype(np.int16) - photo).astype(np.float32)
        assert diff.mean() < 8.0
    # Far from the head (image corner) nothing moves.
    assert np.array_equal(frames[3][:20, :20], photo[:20, :20])


def test_envelope_silence_loud_and_asymmetry() -> None:
    env = MouthEnvelope()
    assert env.push(np.zeros(SAMPLES_PER_VIDEO_FRAME * 5, np.int16)) == [0.0] * 5
    loud = env.push(_tone(SAMPLES_PER_VIDEO_FRAME * 6, -14.0))
    assert loud[-1] > 0.9
    rise_frames = next(i for i, v in enumerate(loud) if v > 0.9 * loud[-1]) + 1
    quiet = env.push(np.zeros(SAMPLES_PER_VIDEO_FRAME * 20, np.int16))
    fall_frames = next(i for i, v in enumerate(quiet) if v < 0.1 * loud[-1]) + 1
    assert rise_frames < fall_frames
    assert quiet[-1] == 0.0


def test_envelope_buffers_partial_frames() -> None:
    tone = _tone(SAMPLES_PER_VIDEO_FRAME * 3, -20.0)
    whole = MouthEnvelope().push(tone)
    env = MouthEnvelope()
    pieces = env.push(tone[:1000]) + env.push(tone[1000:1500]) + env.push(tone[1500:])
    assert pieces == pytest.approx(whole)
    assert env.flush() == []
    assert len(env.push(tone[:100])) == 0 and len(env.flush()) == 1


def test_engine_yields_one_frame_per_640_samples() -> None:
    engine = AnimationEngine.default()
    assert engine.name == "animation" and engine.frame_size == (512, 512)
    pcm = _tone(SAMPLES_PER_VIDEO_FRAME * 7 + 100, -18.0)
    frames = list(engine.frames(pcm, first_index=30))
    assert len(frames) == math.ceil(len(pcm) / SAMPLES_PER_VIDEO_FRAME) == 8
    assert all(f.shape == (512, 512, 3) and f.dtype == np.uint8 for f in frames)
    idle = engine.idle_frame(33)
    assert np.abs(frames[3].astype(np.int16) - idle).mean() > 0.5  # talking differs from idle
    assert list(engine.frames(np.zeros(0, np.int16), 0)) == []


def test_render_speed_bound(animator: FaceAnimator) -> None:
    animator.render(0.5, 0.0)
    start = time.perf_counter()
    n = 50
    for i in range(n):
        animator.render((i % 10) / 10, i * 0.04)
    assert (time.perf_counter() - start) / n < 0.050


def test_load_avatar_default_and_photo(tmp_path, photo: np.ndarray) -> None:
    (frame,) = load_avatar("")
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    path = tmp_path / "face.png"
    odd = np.ascontiguousarray(photo[:301, :255])
    cv2.imwrite(str(path), cv2.cvtColor(odd, cv2.COLOR_RGB2BGR))
    (loaded,) = load_avatar(str(path))
    assert loaded.shape == (300, 254, 3)  # cropped to even dimensions
    assert np.array_equal(loaded, odd[:300, :254])  # PNG is lossless, RGB order kept


def test_load_avatar_video(tmp_path) -> None:
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=50)
        stream.width, stream.height, stream.pix_fmt = 960, 540, "yuv420p"
        for i in range(30):  # 0.6 s at 50 fps
            img = np.full((540, 960, 3), (i * 8) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = load_avatar(str(path))
    assert 14 <= len(frames) <= 16  # resampled to 25 fps
    assert frames[0].shape == (404, 720, 3)  # 540 * 0.75 = 405, cropped to even
    # Every other source frame is kept, so brightness steps by about 16 per output frame.
    assert frames[2].mean() - frames[1].mean() == pytest.approx(16, abs=4)


def test_load_avatar_errors_name_the_path(tmp_path) -> None:
    missing = tmp_path / "nobody.png"
    with pytest.raises(AvatarError, match="nobody.png"):
        load_avatar(str(missing))
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(AvatarError, match="junk.jpg"):
        load_avatar(str(junk))
    weird = tmp_path / "face.gif"
    weird.write_bytes(b"GIF89a")
    with pytest.raises(AvatarError, match="face.gif"):
        load_avatar(str(weird))
