"""One media clock per session: the only place in the system that paces anything.

The lip-sync stage sends ``AvatarFrame`` units (an image and its 640 samples) as fast as it
can; they wait here in a queue bounded in media time. The video track (25 fps) and the audio
track (50 packets/s of 20 ms) both ask this clock for *unit i*, and both compute their
deadlines from the same anchor ``t0``: video frame i is due at ``t0 + 40 ms * i`` and audio
packet m at ``t0 + 20 ms * m``, so packet m carries half of unit ``m // 2``. Whichever track
asks first takes the unit off the queue; the other finds it in a small cache. Audio and video
therefore come from one unit and cannot drift.

Invariants:
- indices (and so RTP timestamps) only move forward; they are never reset;
- when nothing is queued the unit is *idle*: the avatar's idle picture with silence;
- a track that falls far behind (a stalled encoder) skips ahead to "now" instead of
  replaying stale media, and the skipped units are counted as late.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.media import FRAME_MS, SAMPLES_PER_VIDEO_FRAME

_SILENCE = np.zeros(SAMPLES_PER_VIDEO_FRAME, dtype=np.int16)
_SILENCE.setflags(write=False)


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class OutputUnit:
    index: int
    audio: np.ndarray
    image: np.ndarray | None  # None: idle, rendered on demand by the video track
    turn: int = 0
    text: str = ""
    final: bool = False
    idle: bool = True


@dataclass(slots=True)
class MediaCounters:
    units: int = 0
    idle_units: int = 0
    dropped_units: int = 0  # flushed by an interrupt or a closed session
    late_units: int = 0  # skipped because a track fell behind


class SessionMedia:
    # A track that is more than this far behind its deadline skips ahead.
    MAX_LAG_S = 0.5
    # Units kept after they were taken, so the slower track still finds them.
    CACHE_UNITS = 25

    def __init__(
        self,
        max_queued: int,
        clock: Clock | None = None,
        on_unit: Callable[[OutputUnit], None] | None = None,
    ) -> None:
        self._queue: collections.deque[OutputUnit] = collections.deque()
        self._taken = asyncio.Event()  # wakes put() when a unit leaves the queue
        # Units of this turn stay queued, unplayed: a speculative answer, rendered while the user
        # may still go on speaking, plays only once the end of their turn is confirmed.
        self.hold_turn: int | None = None
        self._clock = clock or MonotonicClock()
        self._on_unit = on_unit
        self._units: dict[int, OutputUnit] = {}
        self._next_unit = 0
        self._t0: float | None = None
        self._last_talking_at: float | None = None
        # When a track last asked for a unit: a session whose tracks stopped pulling has no
        # media, and must not be sent frames (they would sit in its queue forever).
        self.last_pull: float | None = None
        self._max_queued = max_queued
        self.counters = MediaCounters()

    # --- producer side ---------------------------------------------------------------------

    async def put(self, unit: OutputUnit) -> None:
        """Queue a talking unit; waits while the queue holds ``max_queued`` units."""
        while len(self._queue) >= self._max_queued:
            self._taken.clear()
            await self._taken.wait()
        self._queue.append(unit)

    def offer(self, unit: OutputUnit) -> bool:
        """Queue a talking unit without waiting; False (and dropped) when the queue is full.

        The gateway never waits on one session's queue: lip-sync only sends what the session's
        flow credit allows, so a full queue means a credit was overrun (counted, not fatal).
        """
        if len(self._queue) >= self._max_queued:
            self.counters.dropped_units += 1
            return False
        self._queue.append(unit)
        return True

    def queued(self) -> int:
        return len(self._queue)

    def room(self) -> int:
        """Units the queue can still take: the session's flow credit."""
        return max(0, self._max_queued - len(self._queue))

    def drain(self) -> list[OutputUnit]:
        """Take every queued unit (a session that lost its media: its text is still delivered)."""
        units = list(self._queue)
        self._queue.clear()
        self._taken.set()
        self.counters.dropped_units += len(units)
        return units

    def pulling(self, within_s: float) -> bool:
        """Whether a track asked for a unit within the last ``within_s`` seconds."""
        return self.last_pull is not None and self._clock.now() - self.last_pull <= within_s

    def flush(self, keep_turn: int) -> int:
        """Drop every queued unit and silence cached units of turns older than ``keep_turn``."""
        dropped = len(self._queue)
        self._queue.clear()
        self._taken.set()
        for index, unit in list(self._units.items()):
            if not unit.idle and unit.turn < keep_turn and index >= self._next_unit - 2:
                self._units[index] = OutputUnit(index, _SILENCE, None)
        self.counters.dropped_units += dropped
        return dropped

    # --- consumer side (the tracks) ---------------------------------------------------------

    def anchor(self) -> float:
        if self._t0 is None:
            self._t0 = self._clock.now()
        return self._t0

    async def pace(self, index: int, period_s: float) -> int:
        """Wait until item ``index`` of a track with ``period_s`` is due; return the index to
        play (larger than asked when the track fell more than MAX_LAG_S behind)."""
        t0 = self.anchor()
        deadline = t0 + index * period_s
        lag = self._clock.now() - deadline
        if lag > self.MAX_LAG_S:
            skip_to = int((self._clock.now() - t0) / period_s)
            return max(index, skip_to)
        await self._clock.sleep_until(deadline)
        return index

    def unit(self, index: int) -> OutputUnit:
        """Unit ``index``: taken from the queue in order the first time, cached after."""
        self.last_pull = self._clock.now()
        while self._next_unit <= index:
            unit = self._take(self._next_unit)
            self._units[self._next_unit] = unit
            self._next_unit += 1
            if unit.index < index:
                # A track skipped ahead: this unit's time has passed unseen.
                self.counters.late_units += 0 if unit.idle else 1
            if self._on_unit is not None:
                self._on_unit(unit)
        for old in [i for i in self._units if i < self._next_unit - self.CACHE_UNITS]:
            del self._units[old]
        return self._units.get(index) or OutputUnit(index, _SILENCE, None)

    def avatar_audible(self, tail_s: float) -> bool:
        """Whether the avatar's voice started playing within the last ``tail_s`` seconds.

        The tail covers the trip back: network, the browser's jitter buffer, the speaker and
        the room, before the microphone stops hearing the avatar.
        """
        last = self._last_talking_at
        return last is not None and self._clock.now() - last <= tail_s

    def _take(self, index: int) -> OutputUnit:
        self.counters.units += 1
        if not self._queue or self._queue[0].turn == self.hold_turn:
            self.counters.idle_units += 1
            return OutputUnit(index, _SILENCE, None)
        queued = self._queue.popleft()
        self._taken.set()
        self._last_talking_at = self._clock.now()
        return OutputUnit(
            index, queued.audio, queued.image, queued.turn, queued.text, queued.final, idle=False
        )

    @property
    def frame_period_s(self) -> float:
        return FRAME_MS / 1000
