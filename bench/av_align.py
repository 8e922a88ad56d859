"""Mouth vs voice in the page, each stream lined up with what the avatar produced.

The avatar's output is known exactly: with ``AVATAR_TTS_NOISE=0`` one text always gives the same
voice, phoneme timing and frames, so this module makes them again in-process (``reference``):
the voice on the media-time axis, and frame k, drawn from the phonemes around k x 40 ms, on
screen over [k x 40, k x 40 + 40) ms beside its own 640 samples. In the page:

- **voice**: the level the page's analyser measured, at the time it reaches the speaker, is
  lined up with the reference voice's level (1 ms steps): the page time at which media time 0
  is heard, ``heard_at``;
- **picture**: each presented frame's RTP timestamp says which frame it is (up to one constant,
  found by matching the mouth crops against the reference's), and ``requestVideoFrameCallback``
  says when it is on screen: the page time at which media time 0 is shown, ``shown_at``;
- **mouth vs voice** = ``shown_at - heard_at`` (positive: the mouth is late).

Voice against voice and picture against picture: nothing here assumes how the mouth relates to
loudness, so a lip closing before an "m" (as it does in real speech) reads as on time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME_MS = 40.0
RTP_PER_FRAME = 3600  # 90 kHz video clock, 25 fps
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


def shown_at_ms(ref: Reference, shown_ms: np.ndarray, rtp: np.ndarray, crops: np.ndarray) -> tuple[float | None, dict]:
    """Page time at which media time 0 is on screen: each presented frame's index comes from its
    RTP timestamp, up to the constant that best matches its mouth crop with the reference's."""
    keep = np.array([r is not None for r in rtp])
    if keep.sum() < 20:
        return None, {}
    shown_ms, crops = shown_ms[keep], crops[keep]
    rel = (np.array([int(r) for r in rtp[keep]], np.int64) - int(rtp[keep][0])) % (1 << 32)
    if np.any(rel % RTP_PER_FRAME):
        return None, {"error": "RTP timestamps are not whole frames apart"}
    index = rel // RTP_PER_FRAME
    n = len(ref.crops)
    best, best_c, second = np.inf, None, np.inf
    for c in range(int(index.min()) - n, int(index.max()) + 1):
        k = index - c
        inside = (k >= 0) & (k < n)
        # Most of the reference's frames must be among the presented ones: the speech, not idle.
        if inside.sum() < 0.8 * n:
            continue
        err = float(np.abs(crops[inside] - ref.crops[k[inside]]).mean())
        if err < best:
            best, best_c, second = err, c, best
        elif err < second:
            second = err
    if best_c is None:
        return None, {}
    k = index - best_c
    inside = (k >= 0) & (k < n)
    at = shown_ms[inside] - k[inside] * FRAME_MS
    return float(np.median(at)), {
        "match_error": round(best, 2), "next_best_error": round(second, 2),
        "frames_matched": int(inside.sum()), "of": n,
        "shown_spread_ms": [round(float(np.percentile(at, q)) - float(np.median(at)), 1) for q in (5, 95)],
    }
