"""A/V sync and first-frame figures from what the browser received (bench.browser.Conversation).

Method, all in page time:
- audio onset: the first 10 ms analyser sample after the user stopped whose level passes
  -40 dBFS (the avatar's voice as played);
- mouth onset (the first lip-synced frame): the first 40 ms video sample whose mouth crop
  differs from the idle face by more than anything the idle face did on its own (blinks and
  breathing set that bar: the 99th percentile of idle differences, times 1.5, plus 1 grey level);
- offset = mouth onset - audio onset (positive: the picture is late). Resolution: one video
  sample, 40 ms;
- drift over a long answer: the lag that best aligns the mouth's motion with the voice's
  envelope (cross-correlation over +-200 ms in 40 ms steps) in the first and the last third
  of the answer; drift = last - first. Units (a frame plus its 40 ms of audio) make drift zero
  by construction; this checks that nothing downstream (encoders, jitter buffers) undoes it.
"""

from __future__ import annotations

import numpy as np

from bench.browser import Conversation

AUDIO_ON = 1e-4  # mean square, about -40 dBFS


def _mouth_series(conv: Conversation) -> tuple[np.ndarray, np.ndarray]:
    rows = [(s["t"], s["mouth"]) for s in conv.samples if s.get("mouth")]
    if not rows:
        return np.zeros(0), np.zeros((0, 0))
    return np.array([t for t, _ in rows]), np.array([m for _, m in rows], float)


def _idle_reference(times: np.ndarray, crops: np.ndarray, until_ms: float) -> tuple[np.ndarray, float] | None:
    idle = crops[times < until_ms]
    if len(idle) < 5:
        return None
    ref = np.median(idle, axis=0)
    idle_diff = np.abs(idle - ref).mean(axis=1)
    return ref, float(np.percentile(idle_diff, 99) * 1.5 + 1.0)


def first_audio_ms(conv: Conversation, after_ms: float) -> float | None:
    return next((t for t, level in conv.audio if t > after_ms and level > AUDIO_ON), None)


def first_mouth_motion_ms(conv: Conversation, after_ms: float) -> float | None:
    times, crops = _mouth_series(conv)
    ref = _idle_reference(times, crops, conv.speech_end_ms - 300)
    if ref is None:
        return None
    idle, bar = ref
    diff = np.abs(crops - idle).mean(axis=1)
    hits = np.flatnonzero((times > after_ms) & (diff > bar))
    return float(times[hits[0]]) if hits.size else None


def _best_lag_ms(times: np.ndarray, motion: np.ndarray, voice: np.ndarray, max_lag: int = 5) -> float | None:
    if len(times) < 3 * max_lag or motion.std() == 0 or voice.std() == 0:
        return None
    m = (motion - motion.mean()) / motion.std()
    v = (voice - voice.mean()) / voice.std()
    best, best_lag = -np.inf, 0
    for lag in range(-max_lag, max_lag + 1):
        a, b = (m[lag:], v[: len(v) - lag]) if lag >= 0 else (m[: len(m) + lag], v[-lag:])
        score = float(np.mean(a * b))
        if score > best:
            best, best_lag = score, lag
    step = float(np.median(np.diff(times)))
    return best_lag * step


def av_sync(conv: Conversation) -> dict:
    """Offset at the start of the answer and drift across it (see the module docstring)."""
    after = conv.speech_end_ms + 150
    audio_on = first_audio_ms(conv, after)
    mouth_on = first_mouth_motion_ms(conv, after)
    result: dict = {
        "audio_onset_ms": None if audio_on is None else round(audio_on - conv.speech_end_ms, 1),
        "mouth_onset_ms": None if mouth_on is None else round(mouth_on - conv.speech_end_ms, 1),
        "onset_offset_ms": None if audio_on is None or mouth_on is None else round(mouth_on - audio_on, 1),
        "lag_first_third_ms": None, "lag_last_third_ms": None, "drift_ms": None,
    }
    times, crops = _mouth_series(conv)
    talking = [t for t, level in conv.audio if t > after and level > AUDIO_ON]
    ref = _idle_reference(times, crops, conv.speech_end_ms - 300)
    if audio_on is None or len(times) < 10 or not talking or ref is None:
        return result
    span = (times >= talking[0]) & (times <= talking[-1])
    times, crops = times[span], crops[span]
    if len(times) < 30:
        return result
    # How far the mouth is from the idle (closed) face: it follows the voice's loudness.
    motion = np.abs(crops - ref[0]).mean(axis=1)
    audio_t = np.array([t for t, _ in conv.audio])
    audio_l = np.sqrt(np.array([level for _, level in conv.audio]))
    # The voice's envelope over the 40 ms centred on each video sample.
    voice = np.zeros(len(times))
    for k, t in enumerate(times):
        near = (audio_t > t - 20) & (audio_t <= t + 20)
        voice[k] = audio_l[near].mean() if near.any() else 0.0
    third = len(times) // 3
    first = _best_lag_ms(times[:third], motion[:third], voice[:third])
    last = _best_lag_ms(times[-third:], motion[-third:], voice[-third:])
    result.update(lag_first_third_ms=first, lag_last_third_ms=last,
                  drift_ms=None if first is None or last is None else last - first)
    return result
