"""MuseTalk avatar preparation, its .npz cache, paste-back and the engine end to end, on tiny
random models saved in the published layout."""

from __future__ import annotations

import os

import numpy as np
import pytest

import musetalk.avatar as avatar_mod
from services.avatar import load_loop
from musetalk.avatar import MuseTalkAvatar, blend_mask, crop_box_for, prepare_avatar
from musetalk.inference import blend_face
from musetalk.models import find_files, load_models
from services.lipsync.engine import LipsyncModelMissing
from services.lipsync.engines import build_engine
from services.lipsync.settings import LipsyncSettings
from tests.test_musetalk_audio import speech_like
from tests.test_musetalk_models import build_tiny_folder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_folder(str(tmp_path_factory.mktemp("mt")))


@pytest.fixture(scope="module")
def models(tiny_dir):
    return load_models(tiny_dir, "cpu")[0]


@pytest.fixture(scope="module")
def engine(tiny_dir, tmp_path_factory):
    settings = LipsyncSettings(
        engine="musetalk",
        musetalk_dir=tiny_dir,
        device="cpu",
        batch_size=4,
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    return build_engine(settings)  # the one-line switch: engine="musetalk"


def _frames(source: str) -> list[np.ndarray]:
    return list(load_loop(source).frames)


def _haar(frames: list[np.ndarray]) -> list:
    """The ``haar`` setting of the one face detector (services/face), on RGB frames."""
    from services.face import face_detector

    return face_detector("haar", "", "cpu").largest_faces(frames, color="rgb")


def test_astronaut_avatar_shapes_and_mask(models):
    avatar = prepare_avatar("", _frames(""), models, 8, _haar)
    assert avatar.frames.shape == (1, 512, 512, 3)
    assert avatar.latents.shape == (1, 8, 32, 32) and avatar.latents.dtype == np.float32
    assert avatar.masks.shape == (1, 256, 256) and avatar.masks.dtype == np.uint8
    x1, y1, x2, y2 = avatar.face_boxes[0]
    assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
    # The astronaut's face sits in the upper middle of the photo.
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 250
    cx1, cy1, cx2, cy2 = avatar.crop_boxes[0]
    assert cx2 - cx1 == cy2 - cy1 >= max(x2 - x1, y2 - y1)
    mask = avatar.masks[0]
    assert mask[:64].max() == 0  # eyes stay the avatar's own
    assert mask[180, 128] > 200  # mouth/chin fully regenerated
    assert mask[250, 2] < 30 and mask[250, 253] < 30  # jaw corners fade out


def test_blend_mask_zeroes_upper_half_of_crop_box():
    face = np.array([100, 100, 200, 220], dtype=np.int32)
    crop = crop_box_for(face)
    assert (crop[2] - crop[0]) == 2 * int(120 // 2 * 1.5)
    mask = blend_mask(face, crop)
    center_row_in_face = ((crop[1] + crop[3]) / 2 - face[1]) / (face[3] - face[1]) * 256
    assert mask[: int(center_row_in_face) - 20].max() == 0
    assert mask[int(center_row_in_face) + 40, 128] > 100


def test_blend_face_respects_mask():
    frame = np.full((64, 64, 3), 10, dtype=np.uint8)
    face = np.full((256, 256, 3), 250, dtype=np.uint8)
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[128:] = 255
    out = blend_face(frame, face, np.array([16, 16, 48, 48]), mask)
    assert (out[:16] == 10).all() and (out[16:30, 16:48] == 10).all()
    assert (out[34:48, 18:46] == 250).all()
    assert (out[48:] == 10).all() and frame.max() == 10  # input untouched


def test_avatar_store_keeps_the_musetalk_step(models, tiny_dir, tmp_path, monkeypatch):
    from services.avatar.library import default_avatar, open_store
    from services.lipsync.avatar_steps import musetalk_avatar

    vae = find_files(tiny_dir).vae_weights
    store = open_store(str(tmp_path))
    prepared = default_avatar(store, "")
    first = musetalk_avatar(store, prepared, models, vae, 4, None)
    steps = [f for f in os.listdir(prepared.path) if f.startswith("musetalk-")]
    assert len(steps) == 1

    def refuse(*_args, **_kwargs):
        raise AssertionError("the store's step was not used")

    monkeypatch.setattr(avatar_mod, "prepare_avatar", refuse)
    second = musetalk_avatar(store, prepared, models, vae, 4, None)
    for name in ("frames", "face_boxes", "crop_boxes", "latents", "masks"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    # Other VAE weights -> other latents -> another step file.
    other = tmp_path / "other-vae.safetensors"
    other.write_bytes(b"different weights")
    with pytest.raises(AssertionError, match="step was not used"):
        musetalk_avatar(store, prepared, models, str(other), 4, None)


def test_video_avatar_prepares_every_frame(models, tmp_path):
    import av
    import skimage.data

    photo = skimage.data.astronaut()
    path = str(tmp_path / "avatar.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
        for shift in (0, 4, 8):
            frame = av.VideoFrame.from_ndarray(np.roll(photo, shift, axis=1), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    avatar = prepare_avatar(path, _frames(path), models, 8, _haar)
    assert avatar.frames.shape[0] == 3 and avatar.latents.shape == (3, 8, 32, 32)
    assert len(avatar) == 3  # the shared forward loop: 0 1 2 0 1 2
    assert avatar.face_boxes[2, 0] - avatar.face_boxes[0, 0] == pytest.approx(8, abs=3)


def test_forward_loop_index_like_every_engine():
    frames = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    avatar = MuseTalkAvatar(
        frames, np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32),
        np.zeros((4, 8, 32, 32), np.float32), np.zeros((4, 256, 256), np.uint8),
    )
    assert len(avatar) == 4
    assert [avatar.loop_index(i) for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_engine_one_second_gives_25_frames(engine):
    assert engine.name == "musetalk"
    pcm = (speech_like(1.0) * 32767).astype(np.int16)
    frames = list(engine.frames(pcm, first_index=0))
    assert len(frames) == 25
    assert all(f.shape == (*engine.frame_size, 3) and f.dtype == np.uint8 for f in frames)
    idle = engine.idle_frame(10)  # the idle picture at the same running frame
    assert idle.shape == (512, 512, 3)
    changed = np.argwhere((frames[10] != idle).any(axis=2))
    assert len(changed) > 100  # the random model repainted the mouth
    x1, y1, x2, y2 = engine.avatar.face_boxes[0]
    assert changed[:, 0].min() >= (y1 + y2) // 2 - 30  # nothing above the nose moved
    assert changed[:, 1].min() >= x1 and changed[:, 1].max() < x2


def test_engine_partial_unit_and_silence(engine):
    pcm = np.zeros(640 * 5 + 100, dtype=np.int16)
    frames = list(engine.frames(pcm, first_index=3))
    assert len(frames) == 6
    assert all(np.array_equal(f, engine.idle_frame(3 + i)) for i, f in enumerate(frames))
    assert list(engine.frames(np.zeros(0, dtype=np.int16), 0)) == []


def test_missing_weights_name_the_fetch_command(tmp_path):
    settings = LipsyncSettings(engine="musetalk", musetalk_dir=str(tmp_path), device="cpu")
    with pytest.raises(LipsyncModelMissing, match="main.py fetch"):
        build_engine(settings)
