"""The embedded-default lip-sync engine: an animated photo driven by loudness (no weights)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from services.avatar import AvatarLoop, load_loop
from services.avatar.animation import FaceAnimator, MouthEnvelope
from services.avatar.face_geometry import FaceGeometry
from services.avatar.idle import IdleAvatar
from services.avatar.library import default_avatar
from services.avatar.store import AvatarStore, PreparedAvatar
from services.lipsync.engine import frames_in_batches
from services.lipsync.settings import LipsyncSettings
from services.media import FRAME_MS, audio_units

logger = logging.getLogger(__name__)

SECONDS_PER_FRAME = FRAME_MS / 1000.0


@dataclass(frozen=True, slots=True)
class AnimationJob:
    first_index: int
    openness: tuple[float, ...]  # mouth openness per frame, from the clause's loudness envelope

    @property
    def n_frames(self) -> int:
        return len(self.openness)


class AnimationEngine:
    """The photo animation over the shared avatar loop (``services.avatar``).

    Face geometry is detected once on the first frame and shared by the loop (a short avatar
    clip is expected to hold the head still), so the per-frame cost stays one warp. Running
    frame i shows loop frame i % len, as every engine and the gateway's idle frames do.
    """

    name = "animation"

    def __init__(self, frames: list[np.ndarray] | AvatarLoop, geometry: FaceGeometry | None = None):
        loop = frames if isinstance(frames, AvatarLoop) else AvatarLoop(tuple(frames), "")
        if not loop.frames:
            raise ValueError("AnimationEngine needs at least one avatar frame")
        self._idle = IdleAvatar(loop, animated=True, geometry=geometry)
        geometry = self._idle.animator(0).geometry
        logger.info(
            "AnimationEngine: %d loop frame(s) of %dx%d, face %s detected=%s",
            len(loop), loop.frame_size[1], loop.frame_size[0], geometry.face_box, geometry.detected,
        )

    @classmethod
    def from_settings(cls, settings: LipsyncSettings) -> "AnimationEngine":
        _store, avatar = default_avatar(settings.cache_dir, settings.avatar)
        return cls(avatar.loop, avatar.geometry)

    def with_avatar(self, store: AvatarStore, avatar: PreparedAvatar) -> "AnimationEngine":
        """The same engine on another stored avatar (the geometry is the store's)."""
        return AnimationEngine(avatar.loop, avatar.geometry)

    def memory_bytes(self) -> int:
        h, w = self.frame_size
        return self._idle.memory_bytes() + len(self._idle.loop) * h * w * 3

    @classmethod
    def default(cls) -> "AnimationEngine":
        """The astronaut photo that ships with scikit-image."""
        return cls(load_loop(""))

    @property
    def frame_size(self) -> tuple[int, int]:
        return self._idle.frame_size

    def _animator(self, index: int) -> FaceAnimator:
        return self._idle.animator(index)

    @property
    def max_batch(self) -> int:
        return 8  # no model: a batch only bounds how long one render call holds the thread

    def prepare(
        self, pcm: np.ndarray, first_index: int, before: np.ndarray | None = None, after: np.ndarray | None = None
    ) -> AnimationJob:
        """The mouth envelope over the whole clause (the tail padded with silence)."""
        # A fresh envelope per clause (clauses of several sessions are prepared in turn), warmed
        # on the voice before it so the mouth does not snap shut where a stream was cut.
        envelope = MouthEnvelope()
        for unit in audio_units(before if before is not None else np.zeros(0, np.int16)):
            envelope.frame_openness(unit)
        return AnimationJob(first_index, tuple(envelope.frame_openness(u) for u in audio_units(np.asarray(pcm, np.int16))))

    def render(self, items: Sequence[tuple[AnimationJob, int]]) -> list[np.ndarray]:
        out = []
        for job, k in items:
            index = job.first_index + k
            out.append(self._animator(index).render(job.openness[k], index * SECONDS_PER_FRAME))
        return out

    def frames(self, pcm: np.ndarray, first_index: int) -> Iterator[np.ndarray]:
        """One image per 640 samples of ``pcm`` (the tail padded with silence)."""
        return frames_in_batches(self, pcm, first_index)

    def idle_frame(self, index: int) -> np.ndarray:
        """The silent avatar at frame ``index``: mouth closed, blinking and breathing."""
        return self._idle.idle_frame(index)

