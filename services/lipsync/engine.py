"""The lip-sync engine interface (shaped like a video generator that batches across sessions).

An engine turns the voice of one clause into pictures: exactly one RGB image per 640-sample
(40 ms) unit of 16 kHz audio. Work happens in two steps, both blocking calls run in the
service's worker thread:

- ``prepare(pcm, first_index)`` does the per-clause work once (mel spectrogram or whisper
  features over the whole clause, so engines that need audio look-ahead have it) and returns a
  ``ClauseJob``;
- ``render(items)`` renders frames ``(job, k)`` of *several clauses of several sessions* in one
  model call. This is what lets one GPU serve many sessions: the scheduler fills each batch
  with the frames that are due soonest, whoever they belong to.

``frames`` (one clause, in order) is kept for tools and tests; it is ``prepare`` + ``render``.

``idle_frame`` is what the avatar shows while it is silent (blinking, breathing); the gateway
uses the same avatar to fill gaps, so idle and talking pictures share one geometry.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from services.config_errors import ConfigurationError


class ClauseJob(Protocol):
    """One clause, prepared: ``n_frames`` frames starting at the session's ``first_index``."""

    @property
    def n_frames(self) -> int: ...


class LipsyncEngine(Protocol):
    name: str
    # True: ``prepare`` also takes ``phonemes`` (the voice's phoneme timing, clause time).
    uses_phonemes: bool

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of every image this engine yields."""

    @property
    def max_batch(self) -> int:
        """Frames per ``render`` call that the engine runs best at."""

    def prepare(
        self,
        pcm: np.ndarray,
        first_index: int,
        before: np.ndarray | None = None,
        after: np.ndarray | None = None,
    ) -> ClauseJob:
        """Per-clause work for 16 kHz int16 ``pcm``: ceil(len(pcm) / 640) frames.

        ``first_index`` is the running frame counter of the session, so an engine that walks an
        avatar video loop continues where the last clause stopped. ``before`` (a whole number of
        640-sample units) and ``after`` are the voice around ``pcm`` when it is one piece of a
        longer stream (streaming TTS): the engine's look-behind and look-ahead windows see the
        real neighbouring audio instead of silence, so piece boundaries leave no trace.
        """

    def render(self, items: Sequence[tuple[ClauseJob, int]]) -> list[np.ndarray]:
        """RGB uint8 images for frame ``k`` of each ``job``, in the order given, in one batch."""

    def frames(self, pcm: np.ndarray, first_index: int) -> Iterator[np.ndarray]:
        """Yield the clause's images in order (``prepare`` then ``render`` in batches)."""

    def idle_frame(self, index: int) -> np.ndarray:
        """The silent avatar at running frame ``index`` (blinking, breathing; never frozen)."""

    def with_avatar(self, store: Any, avatar: Any, progress: Any = None) -> LipsyncEngine:
        """The same loaded model drawing another avatar of the store (``services.avatar.store``:
        an ``AvatarStore`` and a ``PreparedAvatar``); blocking, it may run the engine's own
        preparation step of that avatar once (kept in the store entry), calling
        ``progress(step, fraction)`` when given."""


def frames_in_batches(engine: LipsyncEngine, pcm: np.ndarray, first_index: int) -> Iterator[np.ndarray]:
    """One clause's images, ``engine.max_batch`` frames per model call."""
    job = engine.prepare(pcm, first_index)
    batch = max(1, engine.max_batch)
    for start in range(0, job.n_frames, batch):
        yield from engine.render([(job, k) for k in range(start, min(start + batch, job.n_frames))])


class LipsyncModelMissing(ConfigurationError, RuntimeError):
    """A checkpoint is missing or unreadable; the message says what was found and what to do."""
