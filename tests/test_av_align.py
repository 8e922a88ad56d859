"""bench/av_align.py: the A/V probe's alignment reads a known mouth-vs-voice offset back.

The reference is real (Piper without noise, the lip-sync stage's own cutting and the renderer);
the page's record is made from it here with a known offset, the receiver's 20 ms packets, 10 ms
delivery steps, vsync-quantised display times and noisy crops.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.av_align import (
    FRAME_MS,
    PACKET_MS,
    RTP_PER_PACKET,
    _packet_levels_db,
    element_heard_at_ms,
    heard_at_ms,
    reference,
    windows,
)
from services.tts.settings import TtsSettings
from tests.speech import mouth_box_of_default_avatar

pytestmark = pytest.mark.slow

HEARD_AT = 2345.0  # page time at which media time 0 leaves the speaker
PLAYOUT_DELAY = 30.0


@pytest.fixture(scope="module")
def ref():
    return reference("Mama bought a blue umbrella, for Bob.", mouth_box_of_default_avatar())[0]


def _sources(ref) -> list:  # noqa: ANN001
    """The receiver's record: each packet delivered PLAYOUT_DELAY before it is heard, seen by a
    5 ms poll that reports the latest packet (RTP timestamps wrap)."""
    levels = np.concatenate([np.full(50, 127.0), _packet_levels_db(ref.voice), np.full(50, 127.0)])
    origin = (1 << 32) - 20 * RTP_PER_PACKET
    rows = []
    for p, db in enumerate(levels):
        delivered = HEARD_AT - PLAYOUT_DELAY + (p - 50) * PACKET_MS
        for poll in (2.0, 7.0, 12.0, 17.0):
            rows.append([delivered + poll, delivered + 1700000000000.0, (origin + p * RTP_PER_PACKET) % (1 << 32),
                         0.0 if db >= 127 else 10 ** (-db / 20)])
    return rows


def _frames(ref, mouth_late_ms: float, rng):  # noqa: ANN001
    """Every frame presented at the next 60 Hz vsync after it is due, idle frames either side."""
    n = len(ref.crops)
    index = np.arange(-25, n + 25)
    due = HEARD_AT + mouth_late_ms + index * FRAME_MS
    shown = np.ceil(due / (1000 / 60)) * (1000 / 60)
    crops = np.array([ref.crops[min(max(k, 0), n - 1)] if 0 <= k < n else ref.crops[0] for k in index])
    return shown, crops + rng.normal(0, 6, crops.shape)


@pytest.mark.parametrize("mouth_late_ms", [30.0, -50.0, 0.0])
def test_a_known_offset_reads_back(ref, mouth_late_ms):
    rng = np.random.default_rng(1)
    sources = _sources(ref)
    heard, fit = element_heard_at_ms(ref, sources, 1700000000000.0, PLAYOUT_DELAY)
    assert heard == pytest.approx(HEARD_AT, abs=2), fit
    shown, crops = _frames(ref, mouth_late_ms, rng)
    parts = windows(ref, sources, 1700000000000.0, PLAYOUT_DELAY, heard, shown, crops)
    assert len(parts) >= 3
    offsets = [w["mouth_vs_voice_ms"] for w in parts]
    # Display at the next vsync makes the picture 0-16.7 ms later than due: 8 ms on average.
    assert float(np.median(offsets)) == pytest.approx(mouth_late_ms + 8, abs=6), offsets


def test_the_webaudio_tap_reads_its_own_delay(ref):
    """The analyser's levels, heard 37 ms after the element's copy, read as 37 ms late."""
    win = 85
    t = np.arange(HEARD_AT - 800, HEARD_AT + len(ref.voice) / 16 + 800, 5.0)
    media = t - (HEARD_AT + 37.0)
    ends = np.round(media * 16).astype(int)
    level = np.array([np.mean(ref.voice[e - win : e] ** 2) if win <= e <= len(ref.voice) else 0.0 for e in ends])
    assert heard_at_ms(ref, t, level) == pytest.approx(HEARD_AT + 37.0, abs=3)


def test_tts_noise_setting():
    assert TtsSettings.from_env({}).noise is True
    assert TtsSettings.from_env({"AVATAR_TTS_NOISE": "0"}).noise is False
