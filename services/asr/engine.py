"""The speech-recognition engine interface.

An engine makes one ``RecognizerStream`` per utterance. Its methods are blocking (they run a
decoder) and are called from one worker thread, never from the event loop.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from services.config_errors import ConfigurationError


class RecognizerStream(Protocol):
    def accept(self, pcm: np.ndarray) -> str:
        """Feed 16 kHz mono int16 audio; return the best partial transcript so far ('' if none)."""

    def finish(self) -> str:
        """End of utterance: return the final transcript ('' when nothing was recognised)."""


class PeekableStream(RecognizerStream, Protocol):
    """A stream that can transcribe what it has so far without ending the utterance (Whisper,
    which has no partials), and be dropped without a final decode once that text is kept."""

    def peek(self, silence_samples: int = 0) -> str:
        """The utterance so far, followed by ``silence_samples`` of digital silence (the rest of
        a pause not heard yet, so the decode hears as long an utterance as the one it stands for)."""
        ...

    def close(self) -> None: ...


class AsrEngine(Protocol):
    name: str

    def new_stream(self) -> RecognizerStream: ...


class AsrModelMissing(ConfigurationError, RuntimeError):
    """A configured ASR model is not on disk; the message names the file and the fetch command."""


class AsrModelCorrupt(AsrModelMissing):
    """A model file is on disk but is not the pinned one (its sha256 differs).

    A subclass of AsrModelMissing: whoever handles a missing model (``--check``, start-up) treats
    a damaged one the same way, and the message says how to get a good copy.
    """
