"""Limits on what one client may ask of the gateway: rate limits per session, sessions per
address, and an idle timeout for sessions without media. Each refusal is a clear error event
on the page (the caller sends it); none of them closes a well-behaved session."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """``burst`` actions at once, refilled at ``per_s`` actions per second."""

    burst: float
    per_s: float
    now: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _at: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = self.burst
        self._at = self.now()

    def take(self) -> bool:
        t = self.now()
        self._tokens = min(self.burst, self._tokens + (t - self._at) * self.per_s)
        self._at = t
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after_s(self) -> float:
        return max(0.0, (1.0 - self._tokens) / self.per_s) if self.per_s > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class LimitSettings:
    # Typed questions: each starts an LLM turn. A person types far slower than this.
    text_burst: int = 5
    text_per_min: int = 20
    # Offers: each starts a peer connection (and, with TURN, a relay allocation).
    offer_burst: int = 3
    offer_per_min: int = 6
    # Any message at all (candidates, pings...): stops a flood without hurting ICE trickle.
    message_burst: int = 200
    message_per_s: int = 50
    sessions_per_address: int = 4
    # A session with no media and no message for this long is closed (a forgotten tab).
    idle_timeout_s: float = 600.0


class SessionLimits:
    """The rate limits of one session."""

    def __init__(self, settings: LimitSettings, now: Callable[[], float] = time.monotonic) -> None:
        self.text = TokenBucket(settings.text_burst, settings.text_per_min / 60.0, now)
        self.offer = TokenBucket(settings.offer_burst, settings.offer_per_min / 60.0, now)
        self.message = TokenBucket(settings.message_burst, float(settings.message_per_s), now)


class AddressCounter:
    """Open sessions per client address."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        n = self._open.get(address, 0)
        if n >= self._limit:
            return False
        self._open[address] = n + 1
        return True

    def release(self, address: str) -> None:
        n = self._open.get(address, 0) - 1
        if n > 0:
            self._open[address] = n
        else:
            self._open.pop(address, None)
