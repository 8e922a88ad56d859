"""Mouth vs voice in the page, each stream lined up with what the avatar produced.

The avatar's output is known exactly: with ``AVATAR_TTS_NOISE=0`` one text always gives the same
voice, phoneme timing and frames, so ``reference`` makes them again in-process: the voice on
the media-time axis, and frame k (drawn from the phonemes around k x 40 ms) on screen over
[k x 40, k x 40 + 40) ms beside its own 640 samples. In the page:

- **picture** (``shown_at_ms``): the mouth crops of the frames presented
  (``requestVideoFrameCallback``, each on screen until the next) against the reference's: the
  page time at which media time 0 is shown;
- **voice as the audio element plays it** (``element_heard_at_ms``): the receiver's record of
  when it delivered each RTP packet for playout (``getSynchronizationSources``), each packet
  identified by its level, plus Chrome's playout delay of the element's output
  (``media-playout`` stats): the page time at which media time 0 is heard;
- **the same voice through a WebAudio tap** (``heard_at_ms``): the page's analyser, timed with
  ``AudioContext.getOutputTimestamp``. This copy of the voice goes through WebAudio's own FIFO
  and output: it plays 30-45 ms after the element's (measured), which a viewer never hears.

Mouth vs voice = shown - heard (positive: the mouth is late). Picture against picture and voice
against voice: nothing here assumes how the mouth relates to loudness, so lips closing before
an "m" (as in real speech) read as on time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.packet_match import PACKET_MS, match, packets
from bench.packet_match import RTP_PER_PACKET as RTP_PER_PACKET  # the packet clock, for the tests
from bench.packet_match import levels_db as _packet_levels_db

FRAME_MS = 40.0
# The page's analyser: fftSize 256 at 48 kHz.
ANALYSER_MS = 256 / 48.0


@dataclass(frozen=True)
class Reference:
    voice: np.ndarray  # float32, 16 kHz, media time 0 = sample 0
    crops: np.ndarray  # (frames, 128): the mouth box at 16 x 8 grey, frame k from k x 40 ms


def reference(text: str, box: tuple[float, float, float, float]) -> tuple[Reference, list]:
    """The voice and frames the avatar makes for ``text`` (said as ``say`` cuts it), and the
    TTS stage's messages (for the renderer's own onset figures)."""
    import asyncio

    import cv2

    from bench.bench_visemes import _Collect
    from services import messages
    from services.gateway.say import clauses_of
    from services.lipsync.animation_engine import AnimationEngine
    from services.lipsync.voice_stream import VoiceStream
    from services.media import SAMPLES_PER_VIDEO_FRAME
    from services.tts.piper_engine import PiperEngine
    from services.tts.service import TtsService
    from services.tts.settings import TtsSettings

    async def speak() -> list[messages.SpeechAudio]:
        out, events = _Collect(), _Collect()
        service = TtsService(PiperEngine.from_settings(TtsSettings(noise=False)), out, events)
        parts = clauses_of(text)
        for i, part in enumerate(parts):
            await service.handle(messages.TextChunk("ref", 1, i, part, i == len(parts) - 1))
        await asyncio.wait_for(out.done.wait(), 120)
        await service.scheduler.aclose()
        return out.sent

    chunks = asyncio.run(speak())
    engine = AnimationEngine.default()
    stream, frames, pcm = VoiceStream("ref"), [], []
    for msg in chunks:
        for clause in stream.feed(msg.turn, msg.text, msg.pcm, msg.final, msg.phonemes):
            job = engine.prepare(clause.pcm, len(frames), clause.before, clause.after, phonemes=clause.phonemes)
            frames.extend(engine.render([(job, k) for k in range(job.n_frames)]))
            pcm.append(np.pad(clause.pcm, (0, job.n_frames * SAMPLES_PER_VIDEO_FRAME - len(clause.pcm))))
    h, w = frames[0].shape[:2]
    x0, y0, bw, bh = int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)
    crops = np.array([
        cv2.resize(cv2.cvtColor(f[y0 : y0 + bh, x0 : x0 + bw], cv2.COLOR_RGB2GRAY), (16, 8),
                   interpolation=cv2.INTER_AREA).reshape(-1) for f in frames
    ], float)
    voice = np.concatenate(pcm).astype(np.float32) / 32768.0
    return Reference(voice, crops), chunks


def _envelope(level: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(level, 1e-7))


def heard_at_ms(ref: Reference, heard_ms: np.ndarray, level: np.ndarray) -> float | None:
    """Page time at which the reference's media time 0 reaches the speaker (1 ms steps), from
    the page's analyser levels (mean square) at the times they are heard."""
    if len(heard_ms) < 100:
        return None
    order = np.argsort(heard_ms)
    heard_ms, level = heard_ms[order], level[order]
    # The reference's level as the analyser sees it, on a 1 ms grid (window ending at t).
    win = int(round(ANALYSER_MS * 16))
    sq = np.concatenate([[0.0], np.cumsum(ref.voice.astype(np.float64) ** 2)])
    ends = np.arange(win, len(ref.voice) + 1, 16)
    ref_env = _envelope((sq[ends] - sq[ends - win]) / win)
    ref_ms = ends / 16.0
    grid = np.arange(heard_ms[0], heard_ms[-1], 1.0)
    page_env = _envelope(np.interp(grid, heard_ms, level))
    a = (page_env - page_env.mean()) / (page_env.std() or 1.0)
    b = (ref_env - ref_env.mean()) / (ref_env.std() or 1.0)
    if len(a) < len(b):
        return None
    # score[s]: the reference starting s ms into the page's record (FFT cross-correlation).
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    score = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)[: len(a) - len(b) + 1]
    s = int(np.argmax(score))
    return float(grid[s] - ref_ms[0])  # grid[s]: where the reference's ref_ms[0] is heard


def element_heard_at_ms(
    ref: Reference, sources: list, time_origin: float, playout_delay_ms: float, around_ms: float | None = None
) -> tuple[float | None, dict]:
    """Page time at which media time 0 leaves the audio element's speaker, from the receiver's
    own record (``getSynchronizationSources``: when each RTP packet was delivered for playout,
    its RTP timestamp and the sender's audio-level header) plus Chrome's playout delay of the
    element's output (``media-playout`` stats). Each packet (20 ms) is identified by matching its
    level against the reference's (``bench.packet_match``); resolution: the 10 ms at which the
    receiver delivers."""
    rec = packets(sources, time_origin)
    if rec is None:
        return None, {}
    ref_db = _packet_levels_db(ref.voice)
    n = len(ref_db)
    best_c, best = match(rec, ref_db, around_ms)
    if best_c is None:
        return None, {}
    k = rec.index - best_c
    inside = (k >= 0) & (k < n)
    at = rec.delivered_ms[inside] - k[inside] * PACKET_MS
    return float(np.median(at)) + playout_delay_ms, {"level_error_db": round(best, 2), "packets_matched": int(inside.sum()),
                                                     "of": n, "playout_delay_ms": round(playout_delay_ms, 1)}


def shown_at_ms(ref: Reference, shown_ms: np.ndarray, crops: np.ndarray, near_ms: float) -> tuple[float | None, dict]:
    """Page time at which media time 0 is on screen, within 300 ms of ``near_ms``: the shift
    (1 ms steps) that best matches the picture on screen (each presented frame until the next)
    with the reference's (frame k over [k x 40, k x 40 + 40) ms), crop against crop."""
    n = len(ref.crops)
    if len(shown_ms) < 20 or n < 3:
        return None, {}
    z = lambda c: (c - c.mean(0)) / (c.std(0) + 1e-6)  # noqa: E731
    page, want = z(crops), z(ref.crops)
    grid = np.arange(near_ms, near_ms + n * FRAME_MS, 2.0)
    on_screen = np.searchsorted(shown_ms, grid, side="right") - 1
    scores = []
    shifts = np.arange(near_ms - 300.0, near_ms + 300.0, 1.0)
    for s in shifts:
        k = np.floor((grid - s) / FRAME_MS).astype(int)
        ok = (k >= 0) & (k < n) & (on_screen >= 0)
        scores.append(float((page[on_screen[ok]] * want[k[ok]]).mean()) if ok.sum() > n else -np.inf)
    best = int(np.argmax(scores))
    if best in (0, len(shifts) - 1):
        return None, {}
    return float(shifts[best]), {"match": round(scores[best], 3)}


def windows(ref: Reference, sources: list, time_origin: float, playout_delay_ms: float, heard_ms: float,
            shown_ms: np.ndarray, crops: np.ndarray, frames: int = 25) -> list[dict]:
    """Mouth vs voice over windows of ``frames`` frames (half overlapping), each lined up on its
    own. The avatar's stream is its clauses, each padded to whole frames, and where a clause ends
    depends on when the TTS chunks arrived: the reference's clauses and the served ones need not
    end at the same place, so one alignment over the whole answer would smear across them.
    ``heard_ms``: the whole answer's fit (``element_heard_at_ms``), to search near."""
    out = []
    n = len(ref.crops)
    for f0 in range(0, n - frames + 1, frames // 2):
        part = Reference(ref.voice[f0 * 640 : (f0 + frames) * 640], ref.crops[f0 : f0 + frames])
        start = heard_ms + f0 * FRAME_MS
        heard, _ = element_heard_at_ms(part, sources, time_origin, playout_delay_ms, around_ms=start - playout_delay_ms)
        if heard is None:
            continue
        shown, fit = shown_at_ms(part, shown_ms, crops, heard)
        if shown is not None:
            out.append({"from_ms": f0 * FRAME_MS, "mouth_vs_voice_ms": round(shown - heard, 1), "match": fit["match"]})
    return out
