"""Phoneme timing as it travels with the voice: which phoneme sounds over which samples.

A TTS that knows its alignment (Piper) attaches one ``PhonemeSpan`` list per audio chunk, in
16 kHz samples of that chunk's own time, so the lip-sync stage can shape the mouth per phoneme
instead of by loudness. On the wire (``SpeechAudio.phonemes``) it is a short text, one phoneme
per line as ``<samples>:<phoneme>``; an empty text means "no timing" (XTTS, an API voice).

Only the lengths travel (not start times), so a chunk's spans always tile its audio from
sample 0; ``parse_timing`` refuses anything that does not cover the chunk it came with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_PHONEMES = 4096  # far more than one synthesized sentence has (about 15 a second)
MAX_PHONEME_CHARS = 8
# Piper's durations come in steps of its hop (256 samples at 22.05 kHz = 186 at 16 kHz);
# resampling may add or remove a few samples at the end. More than a frame off is a bug.
MAX_MISMATCH_SAMPLES = 640


@dataclass(frozen=True, slots=True)
class PhonemeSpan:
    phoneme: str
    start: int  # first sample, in the chunk's (or, once re-cut, the clause's) time
    end: int  # one past the last sample

    @property
    def centre(self) -> float:
        return 0.5 * (self.start + self.end)

    def shifted(self, offset: int) -> PhonemeSpan:
        return PhonemeSpan(self.phoneme, self.start + offset, self.end + offset)


def rescale_lengths(lengths: Sequence[int], rate: int, target: int) -> list[int]:
    """Sample counts at ``rate`` -> at ``target``, rounding the running ends so nothing drifts."""
    out, total, previous = [], 0, 0
    for n in lengths:
        total += int(n)
        end = round(total * target / rate)
        out.append(end - previous)
        previous = end
    return out


def encode_timing(phonemes: Iterable[tuple[str, int]]) -> str:
    """(phoneme, samples) pairs -> the wire text; phonemes that would not parse are rejected."""
    lines = []
    for phoneme, samples in phonemes:
        if not phoneme or "\n" in phoneme or len(phoneme) > MAX_PHONEME_CHARS or samples < 0:
            raise ValueError(f"phoneme {phoneme!r} of {samples} samples cannot be encoded")
        lines.append(f"{int(samples)}:{phoneme}")
    return "\n".join(lines)


def parse_timing(text: str, n_samples: int) -> list[PhonemeSpan] | None:
    """The wire text -> spans tiling ``[0, n_samples)``; None if absent or malformed.

    The last span is stretched or cut to end exactly at ``n_samples`` (resampling rounds).
    """
    if not text:
        return None
    lines = text.split("\n")
    if len(lines) > MAX_PHONEMES:
        return None
    spans, start = [], 0
    for line in lines:
        count, sep, phoneme = line.partition(":")
        if not sep or not phoneme or len(phoneme) > MAX_PHONEME_CHARS or not count.isdigit():
            return None
        end = start + int(count)
        spans.append(PhonemeSpan(phoneme, start, end))
        start = end
    if not spans or abs(start - n_samples) > MAX_MISMATCH_SAMPLES:
        return None
    last = spans[-1]
    spans[-1] = PhonemeSpan(last.phoneme, min(last.start, n_samples), n_samples)
    return [s for s in spans if s.end > s.start]
