"""Per-session turn bookkeeping that every stage uses to drop stale work."""

from __future__ import annotations


class TurnTracker:
    """The newest turn each open session has reached.

    A message is stale when its turn is older than the session's current turn, or when the
    session was closed. The gateway owns the turn; other stages learn it from Interrupt and from the
    turns their input carries.
    """

    # Closed ids are remembered (boundedly) so late messages of a closed session are dropped.
    _MAX_CLOSED = 4096

    def __init__(self) -> None:
        self._current: dict[str, int] = {}
        self._closed: dict[str, None] = {}

    def open(self, session: str) -> None:
        self._closed.pop(session, None)
        self._current.setdefault(session, 0)

    def close(self, session: str) -> None:
        self._current.pop(session, None)
        self._closed[session] = None
        while len(self._closed) > self._MAX_CLOSED:
            self._closed.pop(next(iter(self._closed)))

    def advance(self, session: str, turn: int) -> bool:
        """Move ``session`` to ``turn``; True when that moved it forward.

        Data may overtake the SessionOpened broadcast (different sockets), so advancing an
        unknown, never-closed session opens it.
        """
        if session in self._closed:
            return False
        current = self._current.get(session, 0)
        if turn > current:
            self._current[session] = turn
            return True
        self._current.setdefault(session, current)
        return False

    def current(self, session: str) -> int:
        return self._current.get(session, 0)

    def is_closed(self, session: str) -> bool:
        return session in self._closed

    def is_open(self, session: str) -> bool:
        return session in self._current

    def is_stale(self, session: str, turn: int) -> bool:
        return session in self._closed or turn < self._current.get(session, 0)

    def sessions(self) -> list[str]:
        return list(self._current)
