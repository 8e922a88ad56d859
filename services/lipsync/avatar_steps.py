"""Each engine's own preparation of a stored avatar (services/avatar/store.py), kept in its
entry beside the shared loop, faces and geometry. An upload runs it at once (the gateway asks
lip-sync with ``PrepareAvatar``); otherwise it is built on first use.

- Wav2Lip: padded, smoothed face boxes and 96x96 crops per loop frame (``wav2lip.avatar``,
  which ``python -m wav2lip`` uses the same way);
- MuseTalk: face and crop boxes, 256x256 blend masks and the VAE latents per loop frame.

Faces come from the one detector setting (``AVATAR_FACE_DETECTOR``, ``PreparedAvatar.face_finder``).
The step's name holds what its result depends on (detector, VAE weights), so a change of either
prepares it again. ``progress`` (0..1) is called from the worker thread that runs the step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avatar_base.files import file_sha256
from services.avatar.store import AvatarStore, PreparedAvatar
from services.face import FaceDetector

MUSETALK_STEP_VERSION = 1
Progress = Callable[[float], None]


def detector_name(detector: FaceDetector | None) -> str:
    return detector.name if detector is not None else "haar"


def wav2lip_avatar(store: AvatarStore, avatar: PreparedAvatar, detector: FaceDetector | None,
                   progress: Progress | None = None):  # noqa: ANN201
    from wav2lip.avatar import from_store

    return from_store(store, avatar, avatar.face_finder(detector, "bgr"), detector_name(detector), progress=progress)


def musetalk_avatar(store: AvatarStore, avatar: PreparedAvatar, models, vae_weights: str,  # noqa: ANN001, ANN201
                    batch_size: int, detector: FaceDetector | None, progress: Progress | None = None):
    from musetalk.avatar import MuseTalkAvatar, prepare_avatar

    frames = list(avatar.loop.frames)
    vae = file_sha256(vae_weights)[:12] if vae_weights else "novae"

    def build() -> dict[str, np.ndarray]:
        prepared = prepare_avatar(avatar.id, frames, models, batch_size, avatar.face_finder(detector, "rgb"), progress)
        return {"face_boxes": prepared.face_boxes, "crop_boxes": prepared.crop_boxes,
                "latents": prepared.latents, "masks": prepared.masks}

    arrays = store.step(avatar, f"musetalk-v{MUSETALK_STEP_VERSION}-{detector_name(detector)}-{vae}", build)
    return MuseTalkAvatar(np.stack(frames), arrays["face_boxes"], arrays["crop_boxes"], arrays["latents"], arrays["masks"])
