"""The small exception tree of the wav2lip package (drawn in ``wav2lip/__init__.py``)."""

from __future__ import annotations


class Wav2LipError(Exception):
    """Base of every error this package raises on purpose."""


class Wav2LipCheckpointError(Wav2LipError):
    """The file is missing or holds no usable generator weights; the message says what it found."""


class AvatarError(Wav2LipError):
    """The avatar source cannot be read or shows no face."""
