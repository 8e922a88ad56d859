"""Face boxes over an avatar's loop frames: a frame whose face was not found borrows its nearest
neighbour's (a blink or a turn of the head hides it for a frame). One rule for the avatar store's
tracking and the Wav2Lip and MuseTalk steps."""

from __future__ import annotations

from typing import TypeVar

Box = TypeVar("Box")


def fill_from_neighbours(found: list[Box | None]) -> list[Box] | None:
    """Each frame's box, a missing one taken from the nearest frame that has one; None when no
    frame has a face."""
    hits = [i for i, b in enumerate(found) if b is not None]
    if not hits:
        return None
    return [found[min(hits, key=lambda j, i=i: abs(j - i))] for i in range(len(found))]  # type: ignore[misc]
