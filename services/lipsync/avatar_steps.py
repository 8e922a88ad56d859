"""Each engine's own preparation of a stored avatar (services/avatar/store.py), kept in its
entry beside the shared loop, faces and geometry, and built on first use.

- Wav2Lip: padded, smoothed face boxes and 96x96 crops per loop frame;
- MuseTalk: face and crop boxes, 256x256 blend masks and the VAE latents per loop frame.

Faces come from the one detector setting (``AVATAR_FACE_DETECTOR``): ``haar`` takes the boxes
the store found when it prepared the avatar (the same Haar rule, no second detection); ``s3fd``
runs the fetched detector here. The step's name holds what its result depends on (detector,
VAE weights), so a change of either prepares it again.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatar_base.files import file_sha256
from services.avatar.store import AvatarStore, PreparedAvatar
from services.face import FaceDetector

WAV2LIP_STEP_VERSION = 1
MUSETALK_STEP_VERSION = 1


def _finder(avatar: PreparedAvatar, detector: FaceDetector | None, color: str):  # noqa: ANN202
    if detector is None or detector.name == "haar":
        stored = [tuple(int(v) for v in b) for b in avatar.faces]
        return lambda frames: stored
    return lambda frames: detector.largest_faces(frames, color=color)


def wav2lip_avatar(store: AvatarStore, avatar: PreparedAvatar, detector: FaceDetector | None):  # noqa: ANN201
    from wav2lip.avatar import Avatar, AvatarOptions, prepare_from_frames

    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in avatar.loop.frames]
    name = detector.name if detector is not None else "haar"

    def build() -> dict[str, np.ndarray]:
        prepared = prepare_from_frames(bgr, 25.0, len(bgr) == 1, avatar.id, AvatarOptions(),
                                       crossfade=False, find_faces=_finder(avatar, detector, "bgr"))
        return {"boxes": prepared.boxes, "crops": prepared.crops}

    arrays = store.step(avatar, f"wav2lip-v{WAV2LIP_STEP_VERSION}-{name}", build)
    return Avatar(frames=np.stack(bgr), boxes=arrays["boxes"], crops=arrays["crops"], fps=25.0)


def musetalk_avatar(store: AvatarStore, avatar: PreparedAvatar, models, vae_weights: str,  # noqa: ANN001, ANN201
                    batch_size: int, detector: FaceDetector | None):
    from musetalk.avatar import MuseTalkAvatar, prepare_avatar

    frames = list(avatar.loop.frames)
    name = detector.name if detector is not None else "haar"
    vae = file_sha256(vae_weights)[:12] if vae_weights else "novae"

    def build() -> dict[str, np.ndarray]:
        prepared = prepare_avatar(avatar.id, frames, models, batch_size, _finder(avatar, detector, "rgb"))
        return {"face_boxes": prepared.face_boxes, "crop_boxes": prepared.crop_boxes,
                "latents": prepared.latents, "masks": prepared.masks}

    arrays = store.step(avatar, f"musetalk-v{MUSETALK_STEP_VERSION}-{name}-{vae}", build)
    return MuseTalkAvatar(np.stack(frames), arrays["face_boxes"], arrays["crop_boxes"], arrays["latents"], arrays["masks"])
