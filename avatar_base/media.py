"""Media-time facts that every stage and model library agrees on.

Invariant: one 25 fps video frame owns exactly 640 samples (40 ms) of 16 kHz mono int16 audio.
``services/media.py`` builds the pipeline's timing on these; MuseTalk's whisper features are cut
per frame with them.
"""

from __future__ import annotations

SAMPLE_RATE = 16_000
VIDEO_FPS = 25
SAMPLES_PER_VIDEO_FRAME = SAMPLE_RATE // VIDEO_FPS  # 640
