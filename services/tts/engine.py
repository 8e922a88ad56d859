"""The text-to-speech engine interface.

``synthesize`` is a blocking generator run in a worker thread; it yields 16 kHz mono int16
chunks as early as the engine can produce them (per sentence for Piper/VITS, per stream chunk
for XTTS). The service checks for staleness between chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from services.config_errors import ConfigurationError


class TtsEngine(Protocol):
    name: str

    def synthesize(self, text: str) -> Iterator[np.ndarray]: ...


class TtsModelMissing(ConfigurationError, RuntimeError):
    """The configured voice is not on disk; the message names it and the fetch command."""
