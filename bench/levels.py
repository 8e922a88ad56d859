"""Where a voice starts and stops, as a listener would say: 10 ms blocks against -40 dBFS.

The end-to-end benchmark's clocks are defined with these (issue 24): the user's last word ends
with the last 10 ms block of the question's voice above -40 dBFS (the near-silence Piper and
espeak leave after the voice does not count), and the answer is heard from the first 10 ms
block of the page's played audio above -40 dBFS.

A block's level is its mean square relative to full scale (a full-scale square wave is 0 dBFS),
so -40 dBFS is a mean square of 1e-4 on [-1, 1] audio.
"""

from __future__ import annotations

import numpy as np

BLOCK_MS = 10
THRESHOLD_DBFS = -40.0


def mean_square_threshold(dbfs: float = THRESHOLD_DBFS) -> float:
    return float(10 ** (dbfs / 10))


def block_mean_squares(pcm: np.ndarray, rate: int, block_ms: int = BLOCK_MS) -> np.ndarray:
    """Mean square of each whole ``block_ms`` block of ``pcm`` on a [-1, 1] scale
    (int16 input is scaled by 1/32768; a last partial block is dropped)."""
    x = np.asarray(pcm)
    x = x.astype(np.float64) / 32768.0 if x.dtype == np.int16 else x.astype(np.float64)
    n = rate * block_ms // 1000
    blocks = len(x) // n
    if blocks == 0:
        return np.zeros(0)
    return np.mean(np.square(x[: blocks * n].reshape(blocks, n)), axis=1)


def voice_onset_s(pcm: np.ndarray, rate: int, dbfs: float = THRESHOLD_DBFS) -> float | None:
    """Start, in s from the start of ``pcm``, of its first block above ``dbfs``; None if silent."""
    loud = np.flatnonzero(block_mean_squares(pcm, rate) > mean_square_threshold(dbfs))
    return None if len(loud) == 0 else loud[0] * BLOCK_MS / 1000


def voice_end_s(pcm: np.ndarray, rate: int, dbfs: float = THRESHOLD_DBFS) -> float | None:
    """End, in s from the start of ``pcm``, of its last block above ``dbfs`` (the voice has
    stopped there; trailing near-silence is excluded); None if silent."""
    loud = np.flatnonzero(block_mean_squares(pcm, rate) > mean_square_threshold(dbfs))
    return None if len(loud) == 0 else (loud[-1] + 1) * BLOCK_MS / 1000


def first_loud_block(
    blocks: list[tuple[float, float]], after_ms: float, dbfs: float = THRESHOLD_DBFS
) -> float | None:
    """Time of the first ``(time ms, mean square)`` block after ``after_ms`` above ``dbfs``
    (blocks as the page's audio tap records them, in time order); None if none is."""
    threshold = mean_square_threshold(dbfs)
    for t, ms in blocks:
        if t >= after_ms and ms > threshold:
            return t
    return None


def longest_quiet_ms(
    blocks: list[tuple[float, float]], start_ms: float, end_ms: float, dbfs: float = THRESHOLD_DBFS
) -> float:
    """Longest run of blocks at or below ``dbfs`` within [start_ms, end_ms) that is followed by
    a loud block before ``end_ms`` (a pause inside speech, not the silence after it), in ms."""
    threshold = mean_square_threshold(dbfs)
    longest, quiet_from = 0.0, None
    for t, ms in blocks:
        if t < start_ms or t >= end_ms:
            continue
        if ms > threshold:
            if quiet_from is not None:
                longest = max(longest, t - quiet_from)
            quiet_from = None
        elif quiet_from is None:
            quiet_from = t
    return longest
