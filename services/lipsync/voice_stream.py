"""A session's voice as one continuous stream, however TTS chunks it.

Streaming TTS (XTTS: ~20 tokens a chunk) cuts a clause anywhere. Lip-sync needs whole 640-sample
frames and, for Wav2Lip, 200 ms of look-ahead per frame (MuseTalk: 80 ms behind, 120 ms ahead).
Cutting each chunk on its own would zero-pad its last frame (a hole in the voice) and give its
last frames silence to look at (a closing mouth), inside a sentence. So the remainder and the
look-ahead carry across chunks: each chunk's last ``HOLD_FRAMES`` frames (plus any partial
frame) wait for the next chunk, and the voice before a piece travels with it as context.

Phoneme timing, where the TTS sent it, is kept on the same sample axis as the voice and is cut
with it, so each piece gets the phonemes under it (and its neighbours' for coarticulation):
visemes cannot drift from the sound, however the chunks fall.

Only the end of an answer (``final``) is padded to a whole frame. If the next chunk is late
(slow synthesis), ``flush_stale`` releases the held tail after ``HOLD_MAX_S`` with silence as
its look-ahead, so holding never starves playback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from services.lipsync.schedule import Clause
from services.media import SAMPLES_PER_VIDEO_FRAME
from services.phoneme_timing import PhonemeSpan, parse_timing

HOLD_FRAMES = 5  # 200 ms: Wav2Lip's look-ahead window
# Look-behind for the next piece (MuseTalk needs 80 ms). Wav2Lip's spectrogram has a hop of
# 200 samples and frame i's window starts at int(i * 3.2) hops, so it repeats every 5 frames:
# a piece's context starts on that 5-frame grid of the stream, so its hops fall where a
# whole-clause spectrogram's would, and its windows are the same numbers.
MEL_GRID_FRAMES = 5
CONTEXT_FRAMES = 2 * MEL_GRID_FRAMES
HOLD_MAX_S = 0.15
# Phonemes kept behind the cut, for the next piece's coarticulation (a syllable or so).
PHONEME_CONTEXT_SAMPLES = 4 * SAMPLES_PER_VIDEO_FRAME
_EMPTY = np.zeros(0, np.int16)


@dataclass(slots=True)
class VoiceStream:
    session: str
    turn: int = -1
    pending: np.ndarray = field(default_factory=lambda: _EMPTY)
    texts: list[tuple[int, str]] = field(default_factory=list)  # (sample offset in pending, text)
    context: np.ndarray = field(default_factory=lambda: _EMPTY)  # voice already cut, for "before"
    held_since: float | None = None
    cut_frames: int = 0  # whole frames of this turn's stream cut so far
    spans: list[PhonemeSpan] = field(default_factory=list)  # in pending's time (negative: cut)

    def feed(self, turn: int, text: str, pcm: np.ndarray, final: bool, phonemes: str = "") -> list[Clause]:
        """Add one TTS chunk (with its phoneme timing, if any); return the clauses that can be
        rendered now."""
        if turn != self.turn:
            self.reset(turn)
        if text:
            self.texts.append((len(self.pending), text))
        timing = parse_timing(phonemes, len(pcm))
        if timing:
            offset = len(self.pending)
            self.spans.extend(span.shifted(offset) for span in timing)
        if len(pcm):
            self.pending = np.concatenate([self.pending, np.asarray(pcm, np.int16)])
        if final:
            return [self._cut(len(self.pending), final=True, after=None)]
        ready = len(self.pending) // SAMPLES_PER_VIDEO_FRAME - HOLD_FRAMES
        out = []
        if ready > 0:
            n = ready * SAMPLES_PER_VIDEO_FRAME
            out.append(self._cut(n, final=False, after=self.pending[n:]))
        self.held_since = time.monotonic() if len(self.pending) else None
        return out

    def flush_stale(self, now: float | None = None) -> Clause | None:
        """The held tail, if the next chunk is overdue (played with silence as look-ahead)."""
        if self.held_since is None or (now or time.monotonic()) - self.held_since < HOLD_MAX_S:
            return None
        return self._cut(len(self.pending), final=False, after=None)

    def reset(self, turn: int) -> None:
        self.turn, self.pending, self.texts, self.context, self.held_since = turn, _EMPTY, [], _EMPTY, None
        self.cut_frames = 0
        self.spans = []

    def _before(self) -> np.ndarray | None:
        """The context, trimmed to start on the stream's 5-frame spectrogram grid."""
        have = len(self.context) // SAMPLES_PER_VIDEO_FRAME
        lead = self.cut_frames % MEL_GRID_FRAMES
        while lead + MEL_GRID_FRAMES <= have:
            lead += MEL_GRID_FRAMES
        if lead == 0 or lead > have:
            return None
        return self.context[len(self.context) - lead * SAMPLES_PER_VIDEO_FRAME :]

    def _cut(self, n: int, final: bool, after: np.ndarray | None) -> Clause:
        pcm = self.pending[:n]
        texts: dict[int, str] = {}
        for offset, text in self.texts:
            if offset < n or (final and offset <= n):
                frame = min(offset // SAMPLES_PER_VIDEO_FRAME, max(0, -(-n // SAMPLES_PER_VIDEO_FRAME) - 1))
                texts[frame] = f"{texts[frame]} {text}" if frame in texts else text
        self.texts = [(o - n, t) for o, t in self.texts if not (o < n or (final and o <= n))]
        reach = n + (len(after) if after is not None else 0)
        phonemes = tuple(s for s in self.spans if s.end > -PHONEME_CONTEXT_SAMPLES and s.start < reach)
        clause = Clause(
            self.session, self.turn, texts, final, pcm, -(-n // SAMPLES_PER_VIDEO_FRAME),
            before=self._before(), after=after,
            phonemes=phonemes if any(s.end > 0 and s.start < n for s in phonemes) else None,
        )
        whole = n - n % SAMPLES_PER_VIDEO_FRAME
        if whole == n:  # a padded cut breaks the stream: no look-behind across it
            self.context = np.concatenate([self.context, pcm])[-CONTEXT_FRAMES * SAMPLES_PER_VIDEO_FRAME :]
            self.cut_frames += n // SAMPLES_PER_VIDEO_FRAME
            self.spans = [s.shifted(-n) for s in self.spans if s.end - n > -PHONEME_CONTEXT_SAMPLES]
        else:
            self.context, self.cut_frames, self.spans = _EMPTY, 0, []
        self.pending = self.pending[n:]
        self.held_since = time.monotonic() if len(self.pending) else None
        return clause
