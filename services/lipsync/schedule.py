"""Which frames lip-sync renders next: earliest deadline first, across sessions, within credit.

Per session, clauses of voice wait in order (voice is small, so it may queue here). A frame may
be rendered only while the session has flow credit from the gateway (``FlowCredit``): the room
left in its output queue. The session with the most room is the one whose viewer runs out of
frames first (its queue is emptiest), so it has the earliest deadline and goes first. A batch
is filled frame by frame, round robin over sessions in deadline order, so one model call
carries frames of several sessions and none of them waits for another's whole answer.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from services.lipsync.engine import ClauseJob
from services.media import SAMPLES_PER_VIDEO_FRAME
from services.phoneme_timing import PhonemeSpan


@dataclass(slots=True, eq=False)
class Clause:
    """A piece of a session's voice, rendered as ``n_frames`` frames.

    ``texts`` maps a frame to the words that start under it (a streamed clause's pieces are
    re-cut into whole frames, so a clause's text may start inside one). ``before``/``after`` are
    the voice around the piece, for the engine's look-behind and look-ahead windows.
    ``phonemes`` is the voice's phoneme timing in the piece's time, reaching into ``before`` and
    ``after`` where known; None when the voice came without timing.
    """

    session: str
    turn: int
    texts: dict[int, str]
    final: bool
    pcm: np.ndarray
    n_frames: int
    before: np.ndarray | None = None
    after: np.ndarray | None = None
    phonemes: tuple[PhonemeSpan, ...] | None = None
    first_index: int = -1  # the session's running index of frame 0, set when first scheduled
    job: ClauseJob | None = None  # prepared in the worker thread before its first render
    scheduled: int = 0  # frames handed to a batch so far

    @classmethod
    def of(cls, session: str, turn: int, text: str, final: bool, pcm: np.ndarray) -> Clause:
        return cls(session, turn, {0: text} if text else {}, final, pcm, -(-len(pcm) // SAMPLES_PER_VIDEO_FRAME))

    @property
    def text(self) -> str:
        return " ".join(self.texts[k] for k in sorted(self.texts))


@dataclass(frozen=True, slots=True)
class FrameSlot:
    """One frame to render: frame ``k`` of ``clause`` (None: an idle frame of silence that only
    carries the end of an answer whose last clause had no voice)."""

    clause: Clause
    k: int | None
    index: int

    @property
    def final(self) -> bool:
        return self.clause.final and (self.k is None or self.k == self.clause.n_frames - 1)

    @property
    def text(self) -> str:
        return self.clause.texts.get(0 if self.k is None else self.k, "")


@dataclass(slots=True)
class SessionFlow:
    clauses: deque[Clause] = field(default_factory=deque)
    sent: int = 0  # AvatarFrames sent (any turn); compared with the gateway's count
    received: int = 0
    room: int = 0
    media: bool = False
    credited: bool = False  # no frame is rendered before the gateway's first credit
    next_index: int = 0  # running frame index: where the avatar loop continues
    since: float = field(default_factory=time.monotonic)  # tie-break: waiting longest first

    @property
    def credit(self) -> int:
        return self.received + self.room - self.sent

    def pending_frames(self) -> int:
        return sum(c.n_frames - c.scheduled for c in self.clauses)

    def apply_credit(self, received: int, room: int, media: bool) -> None:
        # sent < received only when this lip-sync restarted and forgot its count.
        self.sent = max(self.sent, received)
        self.received, self.room, self.media, self.credited = received, room, media, True


def pick_batch(flows: dict[str, SessionFlow], max_batch: int) -> list[FrameSlot]:
    """Up to ``max_batch`` frames, round robin over sessions with credit, most room first.

    Frames are taken in each session's order, so indices stay consecutive per session.
    Sessions without media are not served here (their clauses go out as text).
    """
    ready = [
        (sid, f) for sid, f in flows.items() if f.credited and f.media and f.clauses and f.credit > 0
    ]
    ready.sort(key=lambda item: (-item[1].credit, item[1].since))
    budget = {sid: f.credit for sid, f in ready}
    batch: list[FrameSlot] = []
    while len(batch) < max_batch and ready:
        still = []
        for sid, flow in ready:
            if len(batch) >= max_batch:
                still.append((sid, flow))
                continue
            slot = _take_frame(flow)
            if slot is None:
                continue
            batch.append(slot)
            budget[sid] -= 1
            if budget[sid] > 0 and flow.clauses:
                still.append((sid, flow))
        ready = still
    return batch


def _take_frame(flow: SessionFlow) -> FrameSlot | None:
    while flow.clauses:
        clause = flow.clauses[0]
        if clause.n_frames == 0:
            flow.clauses.popleft()
            if not clause.final:
                continue  # an empty, non-final chunk carries nothing
            slot = FrameSlot(clause, None, flow.next_index)
        else:
            if clause.scheduled == 0:
                clause.first_index = flow.next_index
            slot = FrameSlot(clause, clause.scheduled, flow.next_index)
            clause.scheduled += 1
            if clause.scheduled == clause.n_frames:
                flow.clauses.popleft()
        flow.next_index += 1
        flow.since = time.monotonic()
        return slot
    return None
