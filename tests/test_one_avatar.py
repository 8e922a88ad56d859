"""One avatar, one loader: every lip-sync engine and the gateway's idle frames use the same
prepared avatar, so idle and talking frames have the same size, the same loop and the same
picture at the same running frame; the switch between them is seamless.

Run for each engine (photo animation; Wav2Lip and MuseTalk with random weights of their real
architectures), with the astronaut photo and with a large 30 fps video (the case where Wav2Lip
used to talk at 1280x720 while idle frames came at 720x404).
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import skimage.data

from services.avatar import load_loop
from services.avatar.idle import IdleAvatar
from services.avatar.library import default_avatar, open_store
from services.lipsync.engines import build_engine
from services.lipsync.settings import LipsyncSettings
from tests.test_musetalk_models import build_tiny_folder
from tests.wav2lip_helpers import save_random_checkpoint

ENGINES = ("animation", "wav2lip", "musetalk")


@pytest.fixture(scope="module")
def big_video(tmp_path_factory) -> str:
    """A 1280x720, 30 fps clip of the astronaut drifting sideways (1 s)."""
    path = str(tmp_path_factory.mktemp("video") / "avatar.mp4")
    photo = skimage.data.astronaut()
    canvas = np.zeros((720, 1280, 3), np.uint8)
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for i in range(30):
            frame = canvas.copy()
            frame[100:612, 380 + i : 892 + i] = photo
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("weights")
    return {
        "wav2lip": str(save_random_checkpoint(root / "wav2lip_gan.pth", seed=3)),
        "musetalk": build_tiny_folder(str(root / "musetalk")),
    }


def _engine(kind: str, avatar: str, weights: dict[str, str], cache_dir: str):
    return build_engine(LipsyncSettings(
        engine=kind, avatar=avatar, wav2lip_checkpoint=weights["wav2lip"], musetalk_dir=weights["musetalk"],
        device="cpu", batch_size=4, cache_dir=cache_dir, face_detector="haar",
    ))


def _voice(seconds: float) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.4 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    return (wave * 32767).astype(np.int16)


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize("source", ["photo", "video"])
def test_idle_and_talking_are_one_picture(kind, source, big_video, weights, tmp_path):
    avatar = "" if source == "photo" else big_video
    engine = _engine(kind, avatar, weights, str(tmp_path))
    # What the gateway shows while the avatar is silent: the same store entry (services/gateway/
    # avatar_idle.py).
    prepared = default_avatar(open_store(str(tmp_path)), avatar)
    gateway_idle = IdleAvatar.for_engine(prepared.loop, kind, prepared.geometry)
    h, w = gateway_idle.frame_size
    assert max(h, w) <= 720 and h % 2 == 0 and w % 2 == 0  # normalised, even, for the encoder
    assert engine.frame_size == (h, w)

    start = 37  # any running frame: the switch happens wherever the clock is
    for i in (start, start + 1, start + 29):
        np.testing.assert_array_equal(engine.idle_frame(i), gateway_idle.idle_frame(i))

    # Silence rendered by the engine at frame i is exactly the idle picture at frame i, so
    # going from idle to talking (and back) never jumps, and the resolution never changes.
    silent = list(engine.frames(np.zeros(640 * 3, np.int16), start))
    for k, frame in enumerate(silent):
        np.testing.assert_array_equal(frame, gateway_idle.idle_frame(start + k))

    talking = list(engine.frames(_voice(0.6), start))
    assert all(f.shape == (h, w, 3) and f.dtype == np.uint8 for f in talking)
    # Talking changes the mouth region only: most of the picture is the idle frame's.
    same = np.mean([(f == gateway_idle.idle_frame(start + k)).all(axis=2).mean() for k, f in enumerate(talking)])
    assert same > 0.5


def test_a_video_is_played_as_the_same_forward_loop_by_everyone(big_video):
    loop = load_loop(big_video)
    assert len(loop) == 25 - 8  # 1 s at 25 fps, shortened by the crossfaded wrap
    assert [loop.index(i) for i in (0, 16, 17, 18)] == [0, 16, 0, 1]
