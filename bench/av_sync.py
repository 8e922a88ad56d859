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
from bench.result_file import write_json

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


# --- the A/V probe: a known sentence through ``say``, every presented frame, the voice as played --
#
#     python -m bench.av_sync [--runs 5] [--url http://127.0.0.1:PORT] [--out bench-results/av_sync.json]
#
# The onset figure above has a resolution of one 40 ms sample and compares two different
# thresholds (any mouth change vs -40 dBFS of voice). The probe instead has the avatar (started
# with AVATAR_TTS_NOISE=0) say a fixed text, records every frame the page presents and the
# receiver's record of the voice it played, and lines each up with the same voice and frames made
# again in-process (bench/av_align.py): mouth vs voice as the viewer gets them, picture against
# picture and voice against voice. Beside it: Chrome's own playout clocks, and the older
# statistic (the lag that best lines the mouth's motion up with the loudness of a WebAudio tap on
# the voice, minus the same on the reference), whose tap plays the voice 30-45 ms late.

PROBE_TEXT = (
    "Mama bought a blue umbrella, for Bob. Peter made a map of the harbour, and Amy paid for it. "
    "Maybe a bottle of apple juice is better."
)
LAG_STEP_MS = 5.0
MAX_LAG_MS = 200.0

_PROBE_JS = """(box) => {
  const video = document.getElementById('avatar');
  const canvas = document.createElement('canvas');
  canvas.width = 16; canvas.height = 8;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const P = window.__probe = { frames: [], audio: [], outputLatency: null, baseLatency: null };
  const onFrame = (now, meta) => {
    const W = video.videoWidth, H = video.videoHeight;
    if (W > 0) {
      ctx.drawImage(video, box[0] * W, box[1] * H, box[2] * W, box[3] * H, 0, 0, 16, 8);
      const d = ctx.getImageData(0, 0, 16, 8).data;
      const mouth = [];
      for (let i = 0; i < d.length; i += 4) mouth.push((d[i] + d[i + 1] + d[i + 2]) / 3);
      P.frames.push([meta.expectedDisplayTime, meta.rtpTimestamp === undefined ? null : meta.rtpTimestamp, mouth, now,
        meta.presentationTime, meta.captureTime ?? null, meta.receiveTime ?? null]);
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  const ac = new AudioContext();
  const analyser = ac.createAnalyser();
  analyser.fftSize = 256;
  ac.createMediaStreamSource(document.getElementById('avatar-audio').srcObject).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  setInterval(() => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    const ts = ac.getOutputTimestamp();
    // The analysed block was rendered at ac.currentTime; the device plays context time
    // ts.contextTime at page time ts.performanceTime: so this block is heard at...
    const heard = ts.performanceTime + 1000 * (ac.currentTime - ts.contextTime);
    P.audio.push([performance.now(), heard, sum / buf.length]);
    P.outputLatency = ac.outputLatency; P.baseLatency = ac.baseLatency;
  }, 5);
  // The voice on the audio element's own path: each RTP packet's level (the sender's
  // audio-level header) and when the receiver delivered it for playout.
  P.timeOrigin = performance.timeOrigin;
  P.sources = [];
  setInterval(() => {
    const pc = window.avatarClient.pc;
    const receiver = pc && pc.getReceivers().find((r) => r.track && r.track.kind === 'audio');
    if (!receiver) return;
    for (const s of receiver.getSynchronizationSources())
      P.sources.push([performance.now(), s.timestamp, s.rtpTimestamp ?? null, s.audioLevel ?? null]);
  }, 5);
  // The receiver's own view: which sender time (NTP) each stream is playing out now.
  P.playout = [];
  setInterval(async () => {
    const pc = window.avatarClient.pc;
    if (!pc) return;
    const row = { t: performance.now() };
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp') row[r.kind] = [r.estimatedPlayoutTimestamp ?? null, r.timestamp,
        r.jitterBufferDelay, r.jitterBufferEmittedCount, r.jitterBufferTargetDelay ?? null,
        r.jitterBufferMinimumDelay ?? null];
      if (r.type === 'media-playout') row.playout = [r.totalPlayoutDelay, r.totalSamplesCount, r.synthesizedSamplesDuration];
      if (r.type === 'remote-outbound-rtp') row[r.kind + 'Sr'] = [r.remoteTimestamp, r.timestamp];
    });
    P.playout.push(row);
  }, 100);
}"""


def best_lag_ms(frame_ms: np.ndarray, motion: np.ndarray, audio_ms: np.ndarray, level: np.ndarray) -> float | None:
    """The lag (ms, positive: the mouth is late) that best correlates the mouth's motion at
    each frame's display time with the voice's envelope around that time."""
    if len(frame_ms) < 20 or motion.std() == 0:
        return None
    env = np.sqrt(np.maximum(level, 0.0))
    order = np.argsort(audio_ms)
    audio_ms, env = audio_ms[order], env[order]
    m = (motion - motion.mean()) / motion.std()
    best, best_lag = -np.inf, None
    for lag in np.arange(-MAX_LAG_MS, MAX_LAG_MS + LAG_STEP_MS / 2, LAG_STEP_MS):
        # A frame shows its unit's 40 ms: compare it with the voice 20 ms into its display.
        v = np.interp(frame_ms + 20.0 - lag, audio_ms, env)
        if v.std() == 0:
            continue
        score = float(np.mean(m * (v - v.mean()) / v.std()))
        if score > best:
            best, best_lag = score, float(lag)
    # A best fit at the edge of the search is no fit (dropped frames, a stalled machine).
    return None if best_lag is None or abs(best_lag) >= MAX_LAG_MS else best_lag


def _motion(crops: np.ndarray) -> np.ndarray:
    """How far each mouth crop is from the closed mouth (the most common crop of the answer)."""
    rest = np.median(crops, axis=0)
    return np.abs(crops - rest).mean(axis=1)


def renderer_onset_ms(chunks, engine, timed: bool) -> float | None:
    """In media time (frame k on screen from k * 40 ms, beside its own 640 samples): the first
    frame whose lips part minus the first 10 ms of voice above -40 dBFS. The renderer's own
    share of the onset offset, before any network or browser; resolution one frame."""
    from services.lipsync.voice_stream import VoiceStream
    from services.media import FRAME_MS

    stream, mouths = VoiceStream("ref"), []
    for msg in chunks:
        for clause in stream.feed(msg.turn, msg.text, msg.pcm, msg.final, msg.phonemes if timed else ""):
            mouths.extend(engine.prepare(clause.pcm, 0, clause.before, clause.after, phonemes=clause.phonemes).mouths)
    voice = np.concatenate([c.pcm for c in chunks]).astype(np.float32) / 32768.0
    blocks = voice[: len(voice) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero((blocks**2).mean(axis=1) > AUDIO_ON)
    animator = engine.animator(0)
    parted = [k for k, m in enumerate(mouths) if animator.mouth_geometry(m)[0] > 0.5]
    if not len(loud) or not parted:
        return None
    return float(parted[0] * FRAME_MS - (loud[0] + 1) * 10)


def reference_lag_ms(ref, chunks) -> tuple[float | None, dict]:
    """The correlation statistic on the avatar's own output (``bench.av_align.reference``), in
    media time: the zero of the correlation check."""
    from services.lipsync.animation_engine import AnimationEngine

    frame_ms = np.arange(len(ref.crops)) * 40.0
    # The analyser's view: mean square of the last 256 samples at 48 kHz (5.3 ms), every 5 ms.
    win = int(round(256 / 48_000 * 16_000))
    ends = np.arange(win, len(ref.voice), 80)
    level = np.array([np.mean(ref.voice[e - win : e] ** 2) for e in ends])
    lag = best_lag_ms(frame_ms, _motion(ref.crops), ends * 1000.0 / 16_000, level)
    engine = AnimationEngine.default()
    onsets = {mode: renderer_onset_ms(chunks, engine, mode == "visemes") for mode in ("visemes", "loudness")}
    return lag, onsets


def probe_once(url: str, text: str, box: tuple[float, float, float, float], tmp: str, ref) -> dict:  # noqa: ANN001
    """One call: the avatar says ``text``; returns what the page presented and played, lined up
    with ``ref`` (``bench.av_align.reference`` of the same text)."""
    from pathlib import Path

    from bench.av_align import element_heard_at_ms, heard_at_ms, shown_at_ms, windows
    from bench.browser import open_call, write_mic_wav

    wav = Path(tmp) / "silence.wav"
    write_mic_wav(wav, np.zeros(0, np.int16), 1.0, 90.0)
    with open_call(url, wav, box) as (page, _):
        page.evaluate(_PROBE_JS, list(box))
        page.wait_for_timeout(1500)  # a second of idle frames first
        page.evaluate("t => window.avatarClient.ws.send(JSON.stringify({type: 'say', text: t}))", text)
        page.wait_for_selector('#transcript .entry[data-role="avatar"][data-final="true"]', timeout=150_000)
        page.wait_for_timeout(800)
        probe = page.evaluate("window.__probe")
        page_stats = page.evaluate("JSON.parse(JSON.stringify(window.avatarClient.stats))")
        stages, hold = page_stats.get("stages") or {}, page_stats.get("videoHoldMs")
    frames = [f for f in probe["frames"] if f[0] is not None]
    frame_ms = np.array([f[0] for f in frames], float)
    crops = np.array([f[2] for f in frames], float)
    audio = np.array([(a[1], a[2]) for a in probe["audio"]], float)
    talking = audio[audio[:, 1] > AUDIO_ON, 0]
    if not len(talking) or not len(frame_ms):
        return {"lag_ms": None}
    # Only the answer (plus a little either side): idle blinks would add noise.
    span = (frame_ms > talking[0] - 300) & (frame_ms < talking[-1] + 300)
    near = (audio[:, 0] > talking[0] - 600) & (audio[:, 0] < talking[-1] + 600)
    lag = best_lag_ms(frame_ms[span], _motion(crops[span]), audio[near, 0], audio[near, 1])
    raw = np.array([(a[0], a[2]) for a in probe["audio"]], float)
    callback_ms = np.array([f[3] for f in frames], float)
    playout = [
        r["video"][0] - r["audio"][0] for r in probe.get("playout", [])
        if r.get("video") and r.get("audio") and r["video"][0] and r["audio"][0]
        and talking[0] <= r["t"] <= talking[-1]
    ]
    jb = {}
    for kind in ("audio", "video"):
        last = next((r[kind] for r in reversed(probe.get("playout", [])) if r.get(kind)), None)
        if last and last[3]:
            jb[kind] = round(1000 * last[2] / last[3], 1)
    tap_heard_at = heard_at_ms(ref, audio[:, 0], audio[:, 1])
    delays = [r["playout"] for r in probe.get("playout", []) if r.get("playout") and r["playout"][1]]
    delay_ms = 1000.0 * delays[-1][0] / delays[-1][1] if delays else None
    heard_at, voice_fit = (None, {}) if delay_ms is None else element_heard_at_ms(
        ref, probe.get("sources", []), probe["timeOrigin"], delay_ms)
    shown_at, video_fit = (None, {}) if heard_at is None else shown_at_ms(ref, frame_ms, crops, heard_at)
    parts = [] if heard_at is None else windows(ref, probe.get("sources", []), probe["timeOrigin"], delay_ms,
                                                heard_at, frame_ms, crops)
    offsets = [w["mouth_vs_voice_ms"] for w in parts]
    return {
        "mouth_vs_voice_ms": float(np.median(offsets)) if offsets else None,
        "first_second_ms": offsets[0] if offsets and parts[0]["from_ms"] == 0 else None,
        "windows": parts,
        "whole_answer_ms": None if heard_at is None or shown_at is None else round(shown_at - heard_at, 1),
        "webaudio_tap_minus_element_ms": None if tap_heard_at is None or heard_at is None else round(tap_heard_at - heard_at, 1),
        "voice_fit": voice_fit,
        "video_fit": video_fit,
        "lag_ms": lag,
        "lag_analyser_time_ms": best_lag_ms(frame_ms[span], _motion(crops[span]), raw[near, 0], raw[near, 1]),
        "lag_callback_time_ms": best_lag_ms(callback_ms[span], _motion(crops[span]), audio[near, 0], audio[near, 1]),
        "playout_video_minus_audio_ms": round(float(np.median(playout)), 1) if playout else None,
        "jitter_buffer_ms": jb,
        "frames": int(span.sum()),
        "output_latency_ms": None if probe["outputLatency"] is None else round(1000 * probe["outputLatency"], 1),
        "base_latency_ms": None if probe["baseLatency"] is None else round(1000 * probe["baseLatency"], 1),
        "mouth": stages.get("lipsync_mouth"),
        "video_hold_ms": hold,
        "video_aligned_by": page_stats.get("videoAlignedBy"),
        "raw": probe,
    }


def main() -> None:
    import argparse
    import json
    import os
    import statistics
    import tempfile

    from bench.av_align import reference
    from bench.avatar_process import AvatarProcess, is_loopback_url
    from tests.speech import mouth_box_of_default_avatar

    parser = argparse.ArgumentParser(description="A/V offset in headless Chromium (see bench/av_sync.py)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--url", default="", help="a running avatar (loopback, started with AVATAR_TTS_NOISE=0); "
                        "default: start one")
    parser.add_argument("--out", default="bench-results/av_sync.json")
    parser.add_argument("--raw", default="", help="also write what the page recorded, per run, to this JSON file")
    args = parser.parse_args()
    if args.url and not is_loopback_url(args.url):
        parser.error("--url must be a loopback address")
    box = mouth_box_of_default_avatar()
    ref, chunks = reference(PROBE_TEXT, box)
    ref_lag, onsets = reference_lag_ms(ref, chunks)
    print(f"reference lag (the avatar's own frames beside their audio): {ref_lag} ms; renderer's "
          f"own onset offset (lips part - voice onset, media time): {onsets}", flush=True)
    proc = None
    if not args.url:
        # No sampling noise: the avatar says the text exactly as the reference does.
        proc = AvatarProcess(env={"AVATAR_TTS_NOISE": "0"})
        proc.wait_ready()
    url = args.url or proc.url
    runs, raw = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.runs):
                run = probe_once(url, PROBE_TEXT, box, tmp, ref)
                raw.append(run.pop("raw"))
                run["correlation_offset_ms"] = None if run["lag_ms"] is None or ref_lag is None else run["lag_ms"] - ref_lag
                runs.append(run)
                print(f"run {i + 1}/{args.runs}: mouth vs voice {run['mouth_vs_voice_ms']} ms (positive: mouth late); "
                      f"{run}", flush=True)
    finally:
        if proc is not None:
            proc.stop()

    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    result = {"text": PROBE_TEXT, "reference_lag_ms": ref_lag, "renderer_onset_ms": onsets, "runs": runs,
              "median_mouth_vs_voice_ms": median("mouth_vs_voice_ms"),
              "median_first_second_ms": median("first_second_ms"),
              "median_webaudio_tap_minus_element_ms": median("webaudio_tap_minus_element_ms"),
              "median_correlation_offset_ms": median("correlation_offset_ms"),
              "median_playout_video_minus_audio_ms": median("playout_video_minus_audio_ms")}
    print(f"median mouth vs voice over {len(runs)} runs: {result['median_mouth_vs_voice_ms']} ms (goal: within "
          f"+-20 ms); in the answer's first second: {result['median_first_second_ms']} ms; correlation check: {result['median_correlation_offset_ms']} ms; Chrome's own playout "
          f"clocks, video - audio: {result['median_playout_video_minus_audio_ms']} ms")
    write_json(args.out, result)
    if args.raw:
        write_json(args.raw, raw, indent=None)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
