"""The embedded-default lip-sync engine: an animated photo (no weights).

With phoneme timing (Piper) each frame's mouth takes the shape of the visemes under it
(services/avatar/visemes.py); voice without timing (XTTS, an API voice) opens the jaw by
loudness, as before. ``AnimationJob.mouth`` says which one a clause got.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from services.avatar import AvatarLoop, load_loop
from services.avatar.animation import FaceAnimator, MouthEnvelope
from services.avatar.face_geometry import FaceGeometry
from services.avatar.idle import IdleAvatar
from services.avatar.visemes import MouthShape, viseme_track
from services.avatar.library import default_avatar, open_store
from services.avatar.store import AvatarStore, PreparedAvatar
from services.lipsync.engine import frames_in_batches
from services.lipsync.settings import LipsyncSettings
from services.media import FRAME_MS, SAMPLES_PER_VIDEO_FRAME, audio_units
from services.phoneme_timing import PhonemeSpan

logger = logging.getLogger(__name__)

SECONDS_PER_FRAME = FRAME_MS / 1000.0
HALF_FRAME = SAMPLES_PER_VIDEO_FRAME // 2


MOUTH_VISEMES = "visemes"
MOUTH_LOUDNESS = "loudness"


@dataclass(frozen=True, slots=True)
class AnimationJob:
    first_index: int
    mouths: tuple[MouthShape, ...]  # the mouth of each frame
    mouth: str = MOUTH_LOUDNESS  # what shaped it: MOUTH_VISEMES, or MOUTH_LOUDNESS (no timing)

    @property
    def n_frames(self) -> int:
        return len(self.mouths)


class AnimationEngine:
    """The photo animation over the shared avatar loop (``services.avatar``).

    Face geometry is detected once on the first frame and shared by the loop (a short avatar
    clip is expected to hold the head still), so the per-frame cost stays one warp. Running
    frame i shows loop frame i % len, as every engine and the gateway's idle frames do.
    """

    name = "animation"
    uses_phonemes = True  # the lip-sync service hands this engine the voice's phoneme timing

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
    def from_settings(cls, settings: LipsyncSettings, store: AvatarStore | None = None) -> "AnimationEngine":
        avatar = default_avatar(store or open_store(settings.cache_dir), settings.avatar)
        return cls(avatar.loop, avatar.geometry)

    def with_avatar(self, store: AvatarStore, avatar: PreparedAvatar,
                    progress: Callable[[str, float], None] | None = None) -> "AnimationEngine":
        """The same engine on another stored avatar. Its step: the face animators of every loop
        frame from the store's geometry (measured when the store prepared the avatar)."""
        if progress is not None:
            progress("animating the face", 0.1)
        engine = AnimationEngine(avatar.loop, avatar.geometry)
        if progress is not None:
            progress("animating the face", 1.0)
        return engine

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

    def animator(self, index: int) -> FaceAnimator:
        """The animator of running frame ``index`` (its geometry is the photo's, for benchmarks)."""
        return self._idle.animator(index)

    @property
    def max_batch(self) -> int:
        return 8  # no model: a batch only bounds how long one render call holds the thread

    def prepare(
        self,
        pcm: np.ndarray,
        first_index: int,
        before: np.ndarray | None = None,
        after: np.ndarray | None = None,
        phonemes: Sequence[PhonemeSpan] | None = None,
    ) -> AnimationJob:
        """The mouth of every frame of the clause (the tail padded with silence).

        ``phonemes`` are in the clause's time and may reach into ``before``/``after`` (negative
        or past the end): a phoneme next door still shapes the edge frames (coarticulation).
        """
        pcm = np.asarray(pcm, np.int16)
        n = -(-len(pcm) // SAMPLES_PER_VIDEO_FRAME)
        # Frame k is on screen from the moment its unit starts to sound, for 40 ms: its mouth is
        # the voice *around* that moment (half a frame either side), not the 40 ms still to come,
        # which had the mouth open up to a frame before the sound (20 ms early at the median).
        lead_in = np.zeros(HALF_FRAME, np.int16)
        if before is not None and len(before):
            lead_in[HALF_FRAME - min(HALF_FRAME, len(before)) :] = before[-HALF_FRAME:]
        centred = np.concatenate([lead_in, pcm])[: n * SAMPLES_PER_VIDEO_FRAME]
        units = audio_units(centred)[:n]
        # A fresh envelope per clause (clauses of several sessions are prepared in turn), warmed
        # on the voice before it so the mouth does not snap shut where a stream was cut.
        envelope = MouthEnvelope()
        for unit in audio_units(before[:-HALF_FRAME] if before is not None else np.zeros(0, np.int16)):
            envelope.frame_openness(unit)
        loudness = [MouthShape(envelope.frame_openness(u)) for u in units]
        if not phonemes:
            return AnimationJob(first_index, tuple(loudness), MOUTH_LOUDNESS)
        padded = np.concatenate(units) if units else pcm
        track = viseme_track(phonemes, padded, len(units), first_sample=-HALF_FRAME)
        mouths = tuple(v if v is not None else o for v, o in zip(track, loudness, strict=True))
        return AnimationJob(first_index, mouths, MOUTH_VISEMES)

    def render(self, items: Sequence[tuple[AnimationJob, int]]) -> list[np.ndarray]:
        out = []
        for job, k in items:
            index = job.first_index + k
            out.append(self.animator(index).render(job.mouths[k], index * SECONDS_PER_FRAME))
        return out

    def frames(self, pcm: np.ndarray, first_index: int) -> Iterator[np.ndarray]:
        """One image per 640 samples of ``pcm`` (the tail padded with silence)."""
        return frames_in_batches(self, pcm, first_index)

    def idle_frame(self, index: int) -> np.ndarray:
        """The silent avatar at frame ``index``: mouth closed, blinking and breathing."""
        return self._idle.idle_frame(index)

