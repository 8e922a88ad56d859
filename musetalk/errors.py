"""The small exception tree of the musetalk package (drawn in ``musetalk/__init__.py``).

musetalk is a model library and does not import ``services``; the lip-sync engine
(``services/lipsync/musetalk_engine.py``) turns ``MuseTalkModelMissing`` into the service's
``LipsyncModelMissing``, as it does for Wav2Lip's checkpoint errors.
"""

from __future__ import annotations


class MuseTalkError(Exception):
    """Base of every error this package raises on purpose."""


class MuseTalkModelMissing(MuseTalkError):
    """A checkpoint is missing, unreadable or does not match its config; the message names the
    file and the fetch command."""


class MuseTalkAvatarError(MuseTalkError):
    """An avatar MuseTalk cannot prepare (no face, a face box too small); said for a person."""
