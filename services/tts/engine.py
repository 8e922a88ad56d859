"""The text-to-speech engine interface.

``synthesize`` is a blocking generator run in a worker thread; it yields 16 kHz mono int16
chunks as early as the engine can produce them (per sentence for Piper/VITS, per stream chunk
for XTTS). The service checks for staleness between chunks. An engine that knows which phoneme
sounds when (Piper) yields ``TimedVoice`` instead of a bare array, and the timing travels with
the audio to lip-sync.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.config_errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class TimedVoice:
    """One chunk of voice and its phoneme timing (services/phoneme_timing.py's wire text)."""

    pcm: np.ndarray
    phonemes: str


def voice_pcm(chunk: np.ndarray | TimedVoice) -> np.ndarray:
    return chunk.pcm if isinstance(chunk, TimedVoice) else chunk


class TtsEngine(Protocol):
    name: str

    def synthesize(self, text: str) -> Iterator[np.ndarray | TimedVoice]: ...


class TtsModelMissing(ConfigurationError, RuntimeError):
    """The configured voice is not on disk; the message names it and the fetch command."""
