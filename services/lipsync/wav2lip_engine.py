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
from collections.abc import Iterator

import cv2
import numpy as np

from services.lipsync.engine import LipsyncModelMissing
from services.lipsync.settings import LipsyncSettings
from services.media import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS
from wav2lip.audio import mel_windows, melspectrogram, pcm16_to_float
from wav2lip.avatar import Avatar, AvatarOptions, load_or_prepare
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

    def __init__(
        self,
        generator: Wav2LipGenerator,
        avatar: Avatar,
        silence_dbfs: float = DEFAULT_SILENCE_DBFS,
    ) -> None:
        self._generator = generator
        self._avatar = avatar
        self._silence_dbfs = silence_dbfs

    @classmethod
    def from_settings(cls, settings: LipsyncSettings) -> Wav2LipEngine:
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
        avatar = load_or_prepare(settings.avatar, settings.cache_dir, AvatarOptions())
        return cls(Wav2LipGenerator(model, precision, settings.batch_size), avatar)

    @property
    def frame_size(self) -> tuple[int, int]:
        return self._avatar.frame_size

    def idle_frame(self, index: int) -> np.ndarray:
        """RGB frame ``index`` of the avatar's forward idle loop."""
        return cv2.cvtColor(self._avatar.frames[index % len(self._avatar)], cv2.COLOR_BGR2RGB)

    def frames(self, pcm: np.ndarray, first_index: int) -> Iterator[np.ndarray]:
        n_frames = math.ceil(len(pcm) / SAMPLES_PER_VIDEO_FRAME)
        if n_frames == 0:
            return
        audio = np.zeros(n_frames * SAMPLES_PER_VIDEO_FRAME + LOOKAHEAD_SAMPLES, dtype=np.float32)
        audio[: len(pcm)] = pcm16_to_float(pcm)
        windows = mel_windows(melspectrogram(audio), n_frames, VIDEO_FPS)
        speaking = active_frames(audio, n_frames, VIDEO_FPS, SAMPLE_RATE, self._silence_dbfs)
        batch = self._generator.batch_size
        for start in range(0, n_frames, batch):
            stop = min(start + batch, n_frames)
            loop_idx = [(first_index + i) % len(self._avatar) for i in range(start, stop)]
            for frame in render_batch(
                self._generator, self._avatar, loop_idx, windows[start:stop], speaking[start:stop]
            ):
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
