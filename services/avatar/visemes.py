"""Phonemes -> mouth shapes, one per 40 ms video frame, with coarticulation.

Each phoneme (espeak IPA, as Piper and Coqui VITS speak) belongs to a viseme class with a target
``MouthShape``. The shape of a frame is a weighted mean of the targets of the phonemes around it
(a dominance model after Cohen and Massaro): a phoneme pulls with ``hold`` times the share of
the frame it covers, plus ``reach`` that fades with its distance from the frame. Lips that must
close (m b p) or touch the teeth (f v) hold hard on the opening, so a 35 ms "b" still shuts the
mouth in the frame that holds its midpoint, while tongue consonants (k g h) barely pull and take
their neighbours' shape. Lip rounding has its own weights, so "m" in "moon" is already rounded.
Neighbouring shapes blend, so fast speech never flickers.

Loudness still scales the opening: a soft vowel opens less than a loud one.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.media import SAMPLES_PER_VIDEO_FRAME, rms_dbfs
from services.phoneme_timing import PhonemeSpan


@dataclass(frozen=True, slots=True)
class MouthShape:
    """What the animation draws: all 0..1 except ``width`` (-1 rounded .. 0 rest .. 1 spread)."""

    open: float = 0.0  # jaw drop, 1 = the widest an open vowel goes
    width: float = 0.0
    teeth: float = 0.0  # how much of the teeth shows in the opening
    tuck: float = 0.0  # lower lip drawn up under the upper teeth (f, v)
    seal: float = 0.0  # lips pressed together (m, b, p): they cover teeth the photo shows


REST = MouthShape()


class Viseme(enum.Enum):
    REST = "rest"
    CLOSED = "closed"  # m b p
    OPEN = "open"  # a
    MID = "mid"  # e ʌ ə
    SPREAD = "spread"  # i
    ROUNDED = "rounded"  # o u w
    LIP_TEETH = "lip-teeth"  # f v
    TEETH = "teeth"  # s t d n θ
    TONGUE = "tongue"  # k g ŋ h ɹ j: the lips follow the neighbours


@dataclass(frozen=True, slots=True)
class _Target:
    viseme: Viseme
    shape: MouthShape
    hold: float  # pull on the opening while the phoneme covers the frame
    reach: float  # pull on the opening from outside it, fading over ``reach_ms``
    reach_ms: float
    shape_hold: float  # the same two for width, teeth and tuck
    shape_reach: float


def _t(viseme: Viseme, open_: float, width: float, teeth: float, tuck: float,
       hold: float, reach: float, reach_ms: float, shape_hold: float, shape_reach: float) -> _Target:
    seal = 1.0 if viseme is Viseme.CLOSED else 0.0
    return _Target(viseme, MouthShape(open_, width, teeth, tuck, seal), hold, reach, reach_ms, shape_hold, shape_reach)


V = Viseme
_PAUSE = _t(V.REST, 0.0, 0.0, 0.0, 0.0, 1.0, 0.1, 30, 0.4, 0.05)
_CLOSED = _t(V.CLOSED, 0.0, 0.0, 0.0, 0.0, 20.0, 0.5, 25, 0.2, 0.05)
_LIP_TEETH = _t(V.LIP_TEETH, 0.1, 0.05, 1.0, 1.0, 8.0, 0.4, 25, 3.0, 0.3)
_TEETH = _t(V.TEETH, 0.2, 0.2, 0.8, 0.0, 1.5, 0.2, 40, 1.0, 0.1)
_TONGUE = _t(V.TONGUE, 0.35, 0.0, 0.3, 0.0, 0.4, 0.05, 40, 0.2, 0.05)
_VOWEL_HOLD, _VOWEL_REACH, _VOWEL_MS = 1.5, 0.3, 50

_TABLE: dict[str, _Target] = {}
for _chars, _target in (
    ("mbp", _CLOSED),
    ("fv", _LIP_TEETH),
    ("sztdnθðɾ", _TEETH),
    ("kgŋhxʔç", _TONGUE),
    (" ,.!?;:—–-…^$_\"'()", _PAUSE),
):
    for _c in _chars:
        _TABLE[_c] = _target
_TABLE.update({
    "l": _t(V.TEETH, 0.35, 0.1, 0.5, 0.0, 0.6, 0.1, 40, 0.5, 0.05),
    "ʃ": _t(V.TEETH, 0.22, -0.45, 0.8, 0.0, 1.5, 0.2, 40, 1.5, 0.2),
    "ʒ": _t(V.TEETH, 0.22, -0.45, 0.8, 0.0, 1.5, 0.2, 40, 1.5, 0.2),
    "j": _t(V.TONGUE, 0.25, 0.35, 0.5, 0.0, 0.5, 0.05, 40, 0.6, 0.1),
    "ɹ": _t(V.TONGUE, 0.3, -0.35, 0.2, 0.0, 0.6, 0.1, 40, 1.0, 0.1),
    "r": _t(V.TONGUE, 0.3, -0.35, 0.2, 0.0, 0.6, 0.1, 40, 1.0, 0.1),
    "w": _t(V.ROUNDED, 0.15, -0.9, 0.0, 0.0, 1.5, 0.3, 40, 3.0, 0.5),
})
for _chars, (_viseme, _open, _width, _teeth) in (
    ("aɑæ", (V.OPEN, 1.0, 0.1, 0.25)),
    ("ɐʌəɚɛeɜᵻ", (V.MID, 0.6, 0.15, 0.35)),
    ("i", (V.SPREAD, 0.3, 0.55, 0.7)),
    ("ɪy", (V.SPREAD, 0.4, 0.4, 0.55)),
    ("oɔɒ", (V.ROUNDED, 0.6, -0.6, 0.1)),
    ("uʊɯ", (V.ROUNDED, 0.35, -0.8, 0.0)),
):
    for _c in _chars:
        _TABLE[_c] = _t(_viseme, _open, _width, _teeth, 0.0,
                        _VOWEL_HOLD, _VOWEL_REACH, _VOWEL_MS, 2.0 if _viseme is V.ROUNDED else 1.0, 0.3)

# Marks that belong to a neighbour: stress to the next phoneme, length and diacritics to the last.
_TO_NEXT = frozenset("ˈˌ")
_TO_PREVIOUS = frozenset("ːˑ̩̃̆")


def viseme_of(phoneme: str) -> Viseme | None:
    """The class of one phoneme (its first letter decides: "aɪ" is open); None for a mark."""
    target = _target_of(phoneme)
    return None if target is None else target.viseme


def _target_of(phoneme: str) -> _Target | None:
    for c in phoneme:
        if c in _TO_NEXT or c in _TO_PREVIOUS:
            continue
        return _TABLE.get(c, _TONGUE)  # an unknown letter: let the neighbours shape the lips
    return None


def merge_marks(spans: Sequence[PhonemeSpan]) -> list[PhonemeSpan]:
    """Give the time of stress and length marks to the phoneme they mark."""
    out: list[PhonemeSpan] = []
    carry: int | None = None  # start of stress marks waiting for their phoneme
    for span in spans:
        if span.phoneme and all(c in _TO_NEXT for c in span.phoneme):
            carry = span.start if carry is None else carry
            continue
        if span.phoneme and all(c in _TO_PREVIOUS for c in span.phoneme) and out:
            last = out[-1]
            out[-1] = PhonemeSpan(last.phoneme, last.start, span.end)
            continue
        out.append(PhonemeSpan(span.phoneme, carry if carry is not None else span.start, span.end))
        carry = None
    return out


def loudness_gain(unit: np.ndarray) -> float:
    """How wide this frame's voice lets the mouth open: 0.7 (soft) .. 1.0 (loud)."""
    return 0.7 + 0.3 * float(np.clip((rms_dbfs(unit) + 42.0) / 20.0, 0.0, 1.0))


def viseme_track(
    spans: Sequence[PhonemeSpan], pcm: np.ndarray, n_frames: int, first_sample: int = 0
) -> list[MouthShape | None]:
    """The shape of each of ``n_frames`` frames starting at ``first_sample`` of ``spans``' time.

    ``pcm`` is the voice of those frames (for loudness). A frame that no span reaches (voice
    that came without timing) is None: the caller falls back to loudness there.
    """
    merged = [(s, t) for s in merge_marks(spans) if (t := _target_of(s.phoneme)) is not None]
    if not merged:
        return [None] * n_frames
    starts = np.array([s.start for s, _ in merged], np.float64)
    ends = np.array([s.end for s, _ in merged], np.float64)
    centres = 0.5 * (starts + ends)
    targets = [t for _, t in merged]
    hold = np.array([t.hold for t in targets])
    reach = np.array([t.reach for t in targets])
    reach_samples = np.array([t.reach_ms * 16.0 for t in targets])
    shape_hold = np.array([t.shape_hold for t in targets])
    shape_reach = np.array([t.shape_reach for t in targets])
    opens = np.array([t.shape.open for t in targets])
    seals = np.array([t.shape.seal for t in targets])
    others = np.array([(t.shape.width, t.shape.teeth, t.shape.tuck) for t in targets])
    frame = float(SAMPLES_PER_VIDEO_FRAME)
    out: list[MouthShape | None] = []
    for k in range(n_frames):
        f0 = first_sample + k * frame
        f1 = f0 + frame
        overlap = np.clip(np.minimum(ends, f1) - np.maximum(starts, f0), 0.0, None) / frame
        if not overlap.any():
            out.append(None)
            continue
        distance = np.maximum(0.0, np.maximum(starts - f1, f0 - ends))
        fade = np.exp(-((distance / reach_samples) ** 2))
        # The frame that holds a phoneme's midpoint shows that phoneme most of all.
        midpoint = ((centres >= f0) & (centres < f1)) * 1.0
        w_open = hold * (overlap + midpoint) + reach * fade
        w_shape = shape_hold * (overlap + midpoint) + shape_reach * fade
        unit = pcm[k * SAMPLES_PER_VIDEO_FRAME : (k + 1) * SAMPLES_PER_VIDEO_FRAME]
        open_ = float(w_open @ opens / w_open.sum()) * loudness_gain(unit)
        seal = float(w_open @ seals / w_open.sum())  # closing the lips is the opening's business
        width, teeth, tuck = (w_shape @ others) / w_shape.sum()
        out.append(MouthShape(open_, float(width), float(teeth), float(tuck), seal))
    return out
