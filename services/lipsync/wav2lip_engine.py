"""Wav2Lip lip-sync engine: our own generator implementation with user-supplied weights.

Per clause: mel spectrogram over the whole clause (plus 200 ms of trailing silence so the last
frames have their look-ahead window), one 16-frame mel window per 40 ms video frame, the model
run in batches of ``batch_size`` frames, and the generated mouth feathered into the avatar's
idle-loop frame. Frames whose 200 ms window is silent skip the model and show the loop frame.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from services.lipsync.engine import LipsyncModelMissing, frames_in_batches
from services.lipsync.settings import LipsyncSettings
from services.media import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS
from wav2lip.audio import mel_windows, melspectrogram, pcm16_to_float
from services.avatar.idle import IdleAvatar
from services.avatar.library import default_avatar, open_store
from services.avatar.store import AvatarStore, PreparedAvatar
from services.face import FaceDetector, face_detector
from services.lipsync.avatar_steps import wav2lip_avatar
from wav2lip.avatar import Avatar
from wav2lip.checkpoint import load_generator
from wav2lip.errors import Wav2LipCheckpointError
from wav2lip.inference import (
    DEFAULT_SILENCE_DBFS,
    Wav2LipGenerator,
    active_frames,
    render_batch,
    select_precision,
)

logger = logging.getLogger(__name__)

# Frame i's mel window covers [t_i, t_i + 200 ms]; the clause's last frames need that much after it.
LOOKAHEAD_SAMPLES = SAMPLE_RATE // 5


@dataclass(frozen=True, slots=True)
class Wav2LipJob:
    first_index: int
    windows: np.ndarray  # (n, 80, 16) mel window per frame
    speaking: np.ndarray  # (n,) bool: the frame's 200 ms window is not silent

    @property
    def n_frames(self) -> int:
        return len(self.windows)


def missing_checkpoint_message(path: str) -> str:
    return (
        f"Wav2Lip checkpoint {path or '(none configured)'} not found. Wav2Lip weights are licensed "
        "by their authors for non-commercial research/personal use only, so this program never "
        "downloads them. Get wav2lip_gan.pth (or Wav2Lip-SD-GAN.pt) from the links in "
        "https://github.com/Rudrabha/Wav2Lip, accept its terms, and put it at that path or point "
        "AVATAR_WAV2LIP_CHECKPOINT at the file (default location: <AVATAR_MODELS_DIR>/wav2lip/"
        "wav2lip_gan.pth). Without it, use AVATAR_LIPSYNC_ENGINE=animation."
    )


class Wav2LipEngine:
    name = "wav2lip"
    uses_phonemes = False  # it learns the mouth from the audio itself

    def __init__(
        self,
        generator: Wav2LipGenerator,
        avatar: Avatar,
        silence_dbfs: float = DEFAULT_SILENCE_DBFS,
        idle: IdleAvatar | None = None,
        detector: FaceDetector | None = None,
    ) -> None:
        self._generator = generator
        self._detector = detector
        self._avatar = avatar
        self._silence_dbfs = silence_dbfs
        # The shared avatar's idle pictures (what the gateway shows while silent). A photo's
        # mouth is pasted into its idle-motion frame, so idle and talking are one picture.
        self._idle = idle

    @classmethod
    def from_settings(cls, settings: LipsyncSettings, store: AvatarStore | None = None) -> Wav2LipEngine:
        path = settings.wav2lip_checkpoint
        if not path or not os.path.isfile(path):
            raise LipsyncModelMissing(missing_checkpoint_message(path))
        try:
            model, _info = load_generator(path)
        except Wav2LipCheckpointError as exc:
            raise LipsyncModelMissing(f"{exc}. {missing_checkpoint_message(path)}") from exc
        precision = select_precision(settings.device)
        logger.info(
            "Wav2LipEngine: %s %s%s, batch %d",
            precision.device,
            precision.dtype,
            " channels_last" if precision.channels_last else "",
            settings.batch_size,
        )
        detector = face_detector(settings.face_detector, settings.models_dir, settings.device)
        store = store or open_store(settings.cache_dir)
        prepared = default_avatar(store, settings.avatar)
        avatar, idle = prepare_shared_avatar(store, prepared, detector)
        return cls(Wav2LipGenerator(model, precision, settings.batch_size), avatar, idle=idle, detector=detector)

    def with_avatar(self, store: AvatarStore, prepared: PreparedAvatar,
                    progress: Callable[[str, float], None] | None = None) -> Wav2LipEngine:
        """The same generator on another stored avatar (its crops from the store)."""
        report = None if progress is None else (lambda f: progress("Wav2Lip's face crops", f))
        avatar, idle = prepare_shared_avatar(store, prepared, self._detector, report)
        return Wav2LipEngine(self._generator, avatar, self._silence_dbfs, idle, self._detector)

    def memory_bytes(self) -> int:
        return int(self._avatar.frames.nbytes + self._avatar.crops.nbytes)

    @property
    def frame_size(self) -> tuple[int, int]:
        return self._avatar.frame_size

    def idle_frame(self, index: int) -> np.ndarray:
        """RGB frame ``index`` of the avatar's idle: the same picture the gateway shows."""
        if self._idle is not None:
            return self._idle.idle_frame(index)
        return cv2.cvtColor(self._avatar.frames[index % len(self._avatar)], cv2.COLOR_BGR2RGB)

    @property
    def max_batch(self) -> int:
        return self._generator.batch_size

    def prepare(
        self, pcm: np.ndarray, first_index: int, before: np.ndarray | None = None, after: np.ndarray | None = None
    ) -> Wav2LipJob:
        n_frames = math.ceil(len(pcm) / SAMPLES_PER_VIDEO_FRAME)
        if n_frames == 0:
            return Wav2LipJob(first_index, np.zeros((0, 80, 16), np.float32), np.zeros(0, bool))
        # Frame i's window is [t_i, t_i + 200 ms]: the last frames need what follows the clause
        # (the next piece of a stream, else silence); the spectrogram's first columns need a
        # little of what came before.
        lead = len(before) // SAMPLES_PER_VIDEO_FRAME * SAMPLES_PER_VIDEO_FRAME if before is not None else 0
        body = n_frames * SAMPLES_PER_VIDEO_FRAME
        audio = np.zeros(lead + body + LOOKAHEAD_SAMPLES, dtype=np.float32)
        if lead:
            audio[:lead] = pcm16_to_float(before[len(before) - lead :])
        audio[lead : lead + len(pcm)] = pcm16_to_float(pcm)
        if after is not None and len(pcm) == body:
            tail = after[:LOOKAHEAD_SAMPLES]
            audio[lead + body : lead + body + len(tail)] = pcm16_to_float(tail)
        skip = lead // SAMPLES_PER_VIDEO_FRAME
        windows = mel_windows(melspectrogram(audio), skip + n_frames, VIDEO_FPS)[skip:]
        speaking = active_frames(audio[lead:], n_frames, VIDEO_FPS, SAMPLE_RATE, self._silence_dbfs)
        return Wav2LipJob(first_index, windows, np.asarray(speaking, bool))

    def render(self, items: Sequence[tuple[Wav2LipJob, int]]) -> list[np.ndarray]:
        """Frames of any clauses of any sessions: the generator sees them as one batch (they
        share the avatar, so only the loop frame and the mel window differ per item)."""
        if not items:
            return []
        loop_idx = [(job.first_index + k) % len(self._avatar) for job, k in items]
        windows = np.stack([job.windows[k] for job, k in items])
        speaking = np.array([bool(job.speaking[k]) for job, k in items])
        backgrounds = None
        if self._idle is not None and self._idle.loop.still:
            backgrounds = [
                cv2.cvtColor(self._idle.idle_frame(job.first_index + k), cv2.COLOR_RGB2BGR) for job, k in items
            ]
        frames = render_batch(self._generator, self._avatar, loop_idx, windows, speaking, backgrounds)
        return [cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in frames]

    def frames(self, pcm: np.ndarray, first_index: int) -> Iterator[np.ndarray]:
        return frames_in_batches(self, pcm, first_index)


def prepare_shared_avatar(
    store: AvatarStore, prepared: PreparedAvatar, detector: FaceDetector | None,
    progress: Callable[[float], None] | None = None,
) -> tuple[Avatar, IdleAvatar]:
    """Wav2Lip's avatar from the store's entry: the same frames, size and loop as the gateway's
    idle pictures, its crops the store's Wav2Lip step."""
    avatar = wav2lip_avatar(store, prepared, detector, progress)
    return avatar, IdleAvatar(prepared.loop, animated=False, geometry=prepared.geometry)
