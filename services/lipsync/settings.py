"""Typed settings of the lip-sync service."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.settings_util import env_choice, env_int, env_str, models_dir, profile

ENGINES = ("animation", "wav2lip", "musetalk")
FACE_DETECTORS = ("auto", "s3fd", "haar")  # services/face: auto = S3FD when fetched, else Haar


@dataclass(frozen=True, slots=True)
class LipsyncSettings:
    engine: str = "animation"
    # Photo or short video of the avatar; "" = skimage.data.astronaut() (ships with scikit-image).
    avatar: str = ""
    # Wav2Lip: a file the user supplies (non-commercial licence; never downloaded for them).
    wav2lip_checkpoint: str = ""
    # MuseTalk: folder with musetalkV15/, sd-vae/, whisper/ (``python main.py fetch``).
    musetalk_dir: str = ""
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 8
    cache_dir: str = ""
    # Face boxes for Wav2Lip/MuseTalk avatars. Haar is fine for the embedded default; the gpu
    # profile prefers S3FD (fetched) and falls back to Haar with a warning.
    face_detector: str = "haar"
    models_dir: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "LipsyncSettings":
        env = os.environ if env is None else env
        # MuseTalk on the gpu profile: its weights are what `fetch` gets (Wav2Lip's never are).
        default_engine = "musetalk" if profile(env) == "gpu" else "animation"
        models = models_dir(env)
        return cls(
            engine=env_choice(env, "AVATAR_LIPSYNC_ENGINE", default_engine, ENGINES),
            avatar=env_str(env, "AVATAR_IMAGE", ""),
            wav2lip_checkpoint=env_str(
                env, "AVATAR_WAV2LIP_CHECKPOINT", os.path.join(models, "wav2lip", "wav2lip_gan.pth")
            ),
            musetalk_dir=env_str(env, "AVATAR_MUSETALK_DIR", os.path.join(models, "musetalk")),
            device=env_choice(env, "AVATAR_DEVICE", "auto", ("auto", "cpu", "cuda")),
            batch_size=env_int(env, "AVATAR_LIPSYNC_BATCH", 8, 1, 64),
            cache_dir=env_str(
                env, "AVATAR_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "avatar")
            ),
            face_detector=env_choice(
                env, "AVATAR_FACE_DETECTOR", "auto" if profile(env) == "gpu" else "haar", FACE_DETECTORS
            ),
            models_dir=models,
        )
