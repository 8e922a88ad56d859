"""MuseTalk 1.5 lip-sync engine (selected with AVATAR_LIPSYNC_ENGINE=musetalk).

Per clause: whisper features once for the whole clause (``musetalk.audio_features``), one
(50, 384) window per 40 ms video frame, then batches of ``batch_size`` frames through the UNet and
VAE decoder, each face blended into its avatar loop frame. Frames whose audio window
([t - 80 ms, t + 120 ms]) is silent skip the model and show the loop frame itself.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from musetalk.audio_features import ClauseFeatures, WhisperFeaturizer, speaking_frames
from musetalk.avatar import MuseTalkAvatar
from musetalk.errors import MuseTalkModelMissing
from musetalk.inference import MuseTalkRenderer, blend_face
from musetalk.models import MuseTalkModels, load_models
from services.avatar.idle import IdleAvatar
from services.avatar.library import default_avatar, open_store
from services.avatar.store import AvatarStore, PreparedAvatar
from services.face import FaceDetector, face_detector
from services.lipsync.avatar_steps import musetalk_avatar
from services.lipsync.engine import LipsyncModelMissing, frames_in_batches
from services.lipsync.settings import LipsyncSettings
from services.media import SAMPLES_PER_VIDEO_FRAME

logger = logging.getLogger(__name__)

DEFAULT_SILENCE_DBFS = -50.0


@dataclass(frozen=True, slots=True)
class MuseTalkJob:
    first_index: int
    speaking: np.ndarray  # (n,) bool
    features: ClauseFeatures | None  # whisper features of the clause; None when all silent
    skip: int = 0  # frames of look-behind context encoded before the clause's first frame

    @property
    def n_frames(self) -> int:
        return len(self.speaking)


class MuseTalkEngine:
    name = "musetalk"
    uses_phonemes = False  # it learns the mouth from the audio itself

    def __init__(
        self,
        models: MuseTalkModels,
        avatar: MuseTalkAvatar,
        batch_size: int = 8,
        whisper_window: str = "clause",
        silence_dbfs: float = DEFAULT_SILENCE_DBFS,
        idle: IdleAvatar | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._avatar = avatar
        # The shared avatar's idle pictures: a photo's face is blended into its idle-motion
        # frame, so idle (the gateway's) and talking are one picture.
        self._idle = idle
        self._batch_size = batch_size
        self._silence_dbfs = silence_dbfs
        self._featurizer = WhisperFeaturizer(
            models.whisper_encoder, models.feature_extractor, whisper_window
        )
        tokens = 10 * self._featurizer.states
        self._renderer = MuseTalkRenderer(models, tokens, self._featurizer.hidden_dim)
        # What ``with_avatar`` prepares another avatar with (set by the builders).
        self._models: MuseTalkModels = models
        self._vae_weights = ""
        self._detector: FaceDetector | None = None

    @classmethod
    def from_settings(cls, settings: LipsyncSettings, store: AvatarStore | None = None) -> MuseTalkEngine:
        try:
            models, files = load_models(settings.musetalk_dir, settings.device)
        except MuseTalkModelMissing as exc:
            raise LipsyncModelMissing(str(exc)) from exc
        detector = face_detector(settings.face_detector, settings.models_dir, settings.device)
        store = store or open_store(settings.cache_dir)
        prepared = default_avatar(store, settings.avatar)
        avatar = musetalk_avatar(store, prepared, models, files.vae_weights, settings.batch_size, detector)
        logger.info(
            "MuseTalkEngine: %s %s, batch %d, avatar %d loop frames",
            models.precision.device, models.precision.dtype, settings.batch_size, len(avatar),
        )
        engine = cls(models, avatar, settings.batch_size, idle=_idle(prepared))
        engine._models, engine._vae_weights, engine._detector = models, files.vae_weights, detector
        return engine

    def with_avatar(self, store: AvatarStore, prepared: PreparedAvatar,
                    progress: Callable[[str, float], None] | None = None) -> MuseTalkEngine:
        """The same models on another stored avatar (its latents and masks from the store)."""
        report = None if progress is None else (lambda f: progress("MuseTalk's latents and masks", f))
        avatar = musetalk_avatar(store, prepared, self._models, self._vae_weights, self._batch_size, self._detector,
                                 report)
        clone = copy.copy(self)  # shares the models, featurizer and renderer (one render thread)
        clone._avatar, clone._idle = avatar, _idle(prepared)
        return clone

    def memory_bytes(self) -> int:
        a = self._avatar
        return int(a.frames.nbytes + a.latents.nbytes + a.masks.nbytes)

    @classmethod
    def from_modules(
        cls,
        models: MuseTalkModels,
        avatar_source: str = "",
        cache_dir: str = "",
        vae_weights: str = "",
        batch_size: int = 8,
        whisper_window: str = "clause",
    ) -> MuseTalkEngine:
        """Build from already-loaded modules (tests, benchmarks). With a ``cache_dir``, the cache
        key needs ``vae_weights``, the VAE weight file the latents came from."""
        if cache_dir and not vae_weights:
            raise ValueError("an avatar cache needs the VAE weights path for its key")
        store = open_store(cache_dir)
        prepared = default_avatar(store, avatar_source)
        avatar = musetalk_avatar(store, prepared, models, vae_weights, batch_size, None)
        engine = cls(models, avatar, batch_size, whisper_window, idle=_idle(prepared))
        engine._models, engine._vae_weights, engine._detector = models, vae_weights, None
        return engine

    @property
    def avatar(self) -> MuseTalkAvatar:
        return self._avatar

    @property
    def frame_size(self) -> tuple[int, int]:
        return self._avatar.frame_size

    def idle_frame(self, index: int) -> np.ndarray:
        if self._idle is not None:
            return self._idle.idle_frame(index)
        return self._avatar.frames[self._avatar.loop_index(index)]

    @property
    def max_batch(self) -> int:
        return self._batch_size

    def prepare(
        self, pcm: np.ndarray, first_index: int, before: np.ndarray | None = None, after: np.ndarray | None = None
    ) -> MuseTalkJob:
        n_frames = math.ceil(len(pcm) / SAMPLES_PER_VIDEO_FRAME)
        if n_frames == 0:
            return MuseTalkJob(first_index, np.zeros(0, bool), None, 0)
        # Frame i's window is [t - 80 ms, t + 120 ms]: encode the neighbouring voice of a stream
        # with the clause, and slice this clause's frames out of it.
        lead = len(before) // SAMPLES_PER_VIDEO_FRAME * SAMPLES_PER_VIDEO_FRAME if before is not None else 0
        body = n_frames * SAMPLES_PER_VIDEO_FRAME
        tail = after if after is not None and len(pcm) == body else np.zeros(0, np.int16)
        parts = [before[len(before) - lead :] if lead else np.zeros(0, np.int16), pcm, tail]
        audio = np.concatenate([np.asarray(p, np.int16) for p in parts]).astype(np.float32) / 32768.0
        skip = lead // SAMPLES_PER_VIDEO_FRAME
        total = math.ceil(len(audio) / SAMPLES_PER_VIDEO_FRAME)
        speaking = np.asarray(speaking_frames(audio, total, self._silence_dbfs), bool)[skip : skip + n_frames]
        # Whisper only runs when some frame speaks; the features are then sliced per frame.
        features = ClauseFeatures(self._featurizer, audio) if speaking.any() else None
        return MuseTalkJob(first_index, speaking, features, skip)

    def render(self, items: Sequence[tuple[MuseTalkJob, int]]) -> list[np.ndarray]:
        """Frames of any clauses of any sessions; every talking face goes through one UNet + VAE
        call (they share the avatar's latents, so only the loop frame and audio window differ)."""
        avatar = self._avatar
        loop = [avatar.loop_index(job.first_index + k) for job, k in items]
        talking = [i for i, (job, k) in enumerate(items) if job.speaking[k] and job.features is not None]
        faces: dict[int, np.ndarray] = {}
        if talking:
            windows = np.concatenate(
                [items[i][0].features.windows(items[i][0].skip + items[i][1], items[i][0].skip + items[i][1] + 1)
                 for i in talking]
            )
            latents = avatar.latents[[loop[i] for i in talking]]
            faces = dict(zip(talking, self._renderer.generate(latents, windows), strict=True))
        still = self._idle is not None and self._idle.loop.still
        out = []
        for i, idx in enumerate(loop):
            job, k = items[i]
            background = self._idle.idle_frame(job.first_index + k) if still else avatar.frames[idx]
            if i in faces:
                out.append(blend_face(background, faces[i], avatar.face_boxes[idx], avatar.masks[idx]))
            else:
                out.append(background)
        return out

    def frames(self, pcm: np.ndarray, first_index: int) -> Iterator[np.ndarray]:
        return frames_in_batches(self, pcm, first_index)


def _idle(prepared: PreparedAvatar) -> IdleAvatar:
    return IdleAvatar(prepared.loop, animated=False, geometry=prepared.geometry)
