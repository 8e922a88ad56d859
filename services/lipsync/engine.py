"""The lip-sync engine interface (shaped like a video generator).

An engine turns the voice of one clause into pictures: exactly one RGB image per 640-sample
(40 ms) unit of 16 kHz audio. It sees the whole clause at once, so engines that need audio
look-ahead (Wav2Lip's 200 ms mel window) have it. ``frames`` is a blocking generator run in a
worker thread; it batches internally and yields images in order, so the service can stop
between batches when the turn goes stale.

``idle_frame`` is what the avatar shows while it is silent (blinking, breathing); the gateway
uses the same avatar to fill gaps, so idle and talking pictures share one geometry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np


class LipsyncEngine(Protocol):
    name: str

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of every image this engine yields."""

    def frames(self, pcm: np.ndarray, first_index: int) -> Iterator[np.ndarray]:
        """Yield ceil(len(pcm) / 640) RGB uint8 images for 16 kHz int16 ``pcm``.

        ``first_index`` is the running frame counter of the session, so an engine that walks an
        avatar video loop continues where the last clause stopped.
        """

    def idle_frame(self, index: int) -> np.ndarray:
        """The silent avatar at running frame ``index`` (blinking, breathing; never frozen)."""


class LipsyncModelMissing(RuntimeError):
    """A checkpoint is missing or unreadable; the message says what was found and what to do."""
