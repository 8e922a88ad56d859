"""Media-time constants shared by every stage.

Invariant: one 25 fps video frame owns exactly 640 samples (40 ms) of 16 kHz mono int16 audio.
The lip-sync stage emits an image and the audio under it as one unit, so they cannot drift.
The three numbers of the invariant live in ``avatar_base/media.py`` (the model libraries use them
too and must not import ``services``); the rest of the stages' timing is built on them here.
"""

from __future__ import annotations

import numpy as np

from avatar_base.media import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS  # noqa: F401 (the stages import them from here)

FRAME_MS = 1000 // VIDEO_FPS  # 40

# WebRTC side: Opus runs at 48 kHz with 20 ms packets.
WEBRTC_SAMPLE_RATE = 48_000
WEBRTC_AUDIO_PTIME_MS = 20
WEBRTC_SAMPLES_PER_PACKET = WEBRTC_SAMPLE_RATE * WEBRTC_AUDIO_PTIME_MS // 1000  # 960
VIDEO_CLOCK_RATE = 90_000
VIDEO_PTS_PER_FRAME = VIDEO_CLOCK_RATE // VIDEO_FPS  # 3600

# Upstream queues are bounded in media time, not in item counts picked at random.
DEFAULT_QUEUE_MS = 200


def frames_for_ms(ms: float) -> int:
    """Number of whole video frames that cover ``ms`` of media time (at least one)."""
    return max(1, int(round(ms / FRAME_MS)))


def split_frames(pcm: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Cut int16 audio into 640-sample frame units; return (units, leftover shorter than a unit)."""
    n_units = len(pcm) // SAMPLES_PER_VIDEO_FRAME
    units = [
        pcm[i * SAMPLES_PER_VIDEO_FRAME : (i + 1) * SAMPLES_PER_VIDEO_FRAME] for i in range(n_units)
    ]
    return units, pcm[n_units * SAMPLES_PER_VIDEO_FRAME :]


def rms_dbfs(pcm: np.ndarray) -> float:
    """Loudness of int16 audio in dBFS (-inf-safe: silence returns -120)."""
    if pcm.size == 0:
        return -120.0
    x = pcm.astype(np.float32) / 32768.0
    rms = float(np.sqrt(np.mean(x * x)))
    return 20.0 * np.log10(max(rms, 1e-6))


def audio_units(pcm: np.ndarray) -> list[np.ndarray]:
    """Cut voice into 640-sample units; the last one is zero-padded (never dropped)."""
    n = -(-len(pcm) // SAMPLES_PER_VIDEO_FRAME)
    padded = np.zeros(n * SAMPLES_PER_VIDEO_FRAME, dtype=np.int16)
    padded[: len(pcm)] = pcm
    return [padded[i * SAMPLES_PER_VIDEO_FRAME : (i + 1) * SAMPLES_PER_VIDEO_FRAME] for i in range(n)]
