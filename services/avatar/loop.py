"""The avatar's forward loop: the normalised frames, played 0, 1, ..., n-1, 0, 1, ...

A video's last frame rarely matches its first, so the loop is shortened by ``fade`` frames
and its first ``fade`` frames blend from the frames after the cut into the loop's start: the
wrap continues the real motion and then eases back. A photo is a loop of one frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from services.avatar.loader import load_avatar

CROSSFADE_FRAMES = 8  # 320 ms at 25 fps


@dataclass(frozen=True, slots=True)
class AvatarLoop:
    frames: tuple[np.ndarray, ...]  # RGB uint8, all the same size
    source: str  # "" = the astronaut

    @property
    def still(self) -> bool:
        return len(self.frames) == 1

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.frames[0].shape[0]), int(self.frames[0].shape[1])

    def __len__(self) -> int:
        return len(self.frames)

    def index(self, running: int) -> int:
        """The loop frame shown at running frame ``running``."""
        return running % len(self.frames)

    def frame(self, running: int) -> np.ndarray:
        return self.frames[self.index(running)]


def crossfade(frames: list[np.ndarray], fade: int = CROSSFADE_FRAMES) -> list[np.ndarray]:
    """A forward loop of ``n - fade`` frames that wraps smoothly; short inputs loop plainly."""
    n = len(frames)
    if fade <= 0 or n <= 2 * fade:
        return list(frames)
    length = n - fade
    out = list(frames[:length])
    for j in range(fade):
        w = (j + 1) / (fade + 1)  # weight of the loop's own frame
        out[j] = cv2.addWeighted(frames[j], w, frames[length + j], 1.0 - w, 0.0)
    return out


def load_loop(source: str) -> AvatarLoop:
    """The loop of ``source`` ("" = the astronaut photo), normalised and crossfaded."""
    frames = [np.ascontiguousarray(f) for f in crossfade(load_avatar(source))]
    for f in frames:
        f.setflags(write=False)
    return AvatarLoop(tuple(frames), source)
