"""What the silent avatar shows at running frame i, the same for the gateway and every engine.

- A photo: the idle motion of the photo animation (breathing, blinking), mouth closed. Wav2Lip
  and MuseTalk paste their mouths onto this same picture, so talking starts from the frame the
  viewer already sees.
- A video with Wav2Lip or MuseTalk: the video's own forward loop; it moves by itself.
- A video with the photo animation: its loop with the animation's idle motion on top, since
  that engine draws its talking frames the same way.
"""

from __future__ import annotations

import numpy as np

from services.avatar.animation import FaceAnimator
from services.avatar.face_geometry import FaceGeometry
from services.avatar.loop import AvatarLoop
from services.media import FRAME_MS

SECONDS_PER_FRAME = FRAME_MS / 1000.0


class IdleAvatar:
    def __init__(self, loop: AvatarLoop, animated: bool, geometry: FaceGeometry | None = None) -> None:
        """``geometry``: the avatar store's (services/avatar/store.py); found now when None."""
        self.loop = loop
        self._animators: list[FaceAnimator] | None = None
        if animated or loop.still:
            # Geometry once, on the first frame: a short avatar clip holds the head still.
            first = FaceAnimator(loop.frames[0], geometry)
            self._animators = [first] + [first.with_image(f) for f in loop.frames[1:]]

    @classmethod
    def for_engine(cls, loop: AvatarLoop, engine: str, geometry: FaceGeometry | None = None) -> IdleAvatar:
        return cls(loop, animated=engine == "animation", geometry=geometry)

    def memory_bytes(self) -> int:
        """The animation's per-pixel fields (four float32 maps) on top of the frames."""
        h, w = self.frame_size
        return 16 * h * w if self._animators is not None else 0

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.loop.frame_size

    def animator(self, running: int) -> FaceAnimator:
        assert self._animators is not None
        return self._animators[self.loop.index(running)]

    def idle_frame(self, running: int) -> np.ndarray:
        """RGB uint8 picture of the silent avatar at running frame ``running``."""
        if self._animators is None:
            return self.loop.frame(running)
        return self.animator(running).render(0.0, running * SECONDS_PER_FRAME)
