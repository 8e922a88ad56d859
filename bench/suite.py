"""The benchmark suite behind ``python -m bench`` (see bench/__main__.py).

Lip-sync speed and endpointing run first, on an idle machine; then one real avatar
(``python main.py``, embedded default) serves every browser measurement in turn.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from bench import bench_barge_in, bench_endpointing, capacity
from bench.av_sync import av_sync
from bench.avatar_process import ROOT, AvatarProcess
from bench.bench_e2e import LEAD_S, QUESTIONS, VOICES, heard_spans, percentile, speaker
from bench.browser import _collect, converse, open_call, write_mic_wav
from bench.hardware import hardware
from bench.result_file import write_json

logger = logging.getLogger(__name__)

STAGES = ("endpoint_ms", "asr_ms", "llm_first_token_ms", "llm_first_clause_ms",
          "tts_first_audio_ms", "lipsync_first_frame_ms", "first_audio_ms")
LONG_QUESTION = "Please tell me a long story about a brave knight and a dragon."


@dataclass(frozen=True)
class Plan:
    e2e_runs: int
    barge_in_runs: int
    smoothness_s: float
    capacity_max: int
    capacity_window_s: float
    wav2lip_trials: int
    animation_frames: int
    endpointing_runs: int
    long_answer: bool

    @classmethod
    def full(cls) -> "Plan":
        return cls(10, 5, 60.0, 6, 12.0, 3, 500, 3, True)

    @classmethod
    def quick(cls) -> "Plan":
        return cls(2, 0, 15.0, 1, 6.0, 1, 100, 1, False)


def stats(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0, "median": None, "p95": None, "worst": None}
    return {"n": len(values), "median": round(statistics.median(values), 1),
            "p95": round(percentile(values, 0.95), 1), "worst": round(max(values), 1)}


def _module_json(module: str, out: Path, *args: str) -> dict:
    """Run another benchmark as its own process (its own threads, a clean CPU) and read its JSON."""
    cmd = [sys.executable, "-m", module, "--out", str(out), *args]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    print(done.stdout.strip(), flush=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-2000:]}
    return json.loads(out.read_text())


def lipsync_speed(out_dir: Path, plan: Plan) -> dict:
    return {
        "animation": _module_json("bench.bench_animation", out_dir / "animation.json",
                                  "--frames", str(plan.animation_frames)),
        "wav2lip": _module_json("bench.bench_wav2lip", out_dir / "wav2lip.json",
                                "--trials", str(plan.wav2lip_trials)),
        "musetalk": _module_json("bench.bench_musetalk", out_dir / "musetalk.json", "--trials", "1"),
    }


def end_to_end(url: str, plan: Plan, tmp: Path) -> dict:
    from tests.speech import mouth_box_of_default_avatar

    box = mouth_box_of_default_avatar()
    speak = speaker()
    runs = []
    for i in range(plan.e2e_runs):
        text, voice = QUESTIONS[i % len(QUESTIONS)], VOICES[i % len(VOICES)]
        wav = tmp / f"e2e{i}.wav"
        pcm = speak(text, voice)
        speech_s = write_mic_wav(wav, pcm, LEAD_S, 25.0)
        conv = converse(url, wav, LEAD_S + speech_s, box)
        heard = heard_spans(conv, pcm)
        sync = av_sync(conv)
        page_stats = (conv.events.get("stats") or {}).get("stages") or {}
        audio_rtp = (conv.events.get("rtp") or {}).get("audio") or {}
        run = {
            "question": text,
            "voice": " ".join(map(str, voice)),
            # As a listener hears it (issue 24): last word above -40 dBFS -> first answer block.
            "heard_ms": heard["total_ms"],
            "spans": {k: heard[k] for k in ("uplink_vad_ms", "server_ms", "downlink_ms")},
            # The old definition, for comparison: from the end of the question's WAV segment.
            "first_audio_ms": sync["audio_onset_ms"],
            "first_lipsynced_frame_ms": sync["mouth_onset_ms"],
            "av_onset_offset_ms": sync["onset_offset_ms"],
            "stages": {k: page_stats.get(k) for k in STAGES},
            # The gateway's first_audio_ms ends when it sends; the browser's when it plays.
            "network_and_buffers_ms": None if sync["audio_onset_ms"] is None or page_stats.get("first_audio_ms") is None
            else round(sync["audio_onset_ms"] - page_stats["first_audio_ms"], 1),
            "audio_jitter_buffer_ms": audio_rtp.get("jitter_buffer_ms"),
            "fps": round(conv.fps(), 1),
            "heard": conv.user_text(),
        }
        runs.append(run)
        print(f"e2e {i + 1}/{plan.e2e_runs}: heard {run['heard_ms']} ms {run['spans']}, old definition "
              f"{run['first_audio_ms']} ms, first lip-synced frame "
              f"{run['first_lipsynced_frame_ms']} ms, A/V onset offset {run['av_onset_offset_ms']} ms", flush=True)
    per_stage = {k: stats([r["stages"][k] for r in runs]) for k in STAGES}
    per_stage["network_and_buffers_ms"] = stats([r["network_and_buffers_ms"] for r in runs])
    per_stage["audio_jitter_buffer_ms"] = stats([r["audio_jitter_buffer_ms"] for r in runs])
    return {
        "runs": runs,
        "heard_ms": stats([r["heard_ms"] for r in runs]),
        **{k: stats([r["spans"][k] for r in runs]) for k in ("uplink_vad_ms", "server_ms", "downlink_ms")},
        "first_audio_ms": stats([r["first_audio_ms"] for r in runs]),
        "first_lipsynced_frame_ms": stats([r["first_lipsynced_frame_ms"] for r in runs]),
        "av_onset_offset_ms": stats([r["av_onset_offset_ms"] for r in runs]),
        "per_stage_ms": per_stage,
        "fps": stats([r["fps"] for r in runs]),
    }


def long_answer_drift(url: str, tmp: Path) -> dict:
    from tests.speech import mouth_box_of_default_avatar, piper_speech

    wav = tmp / "long.wav"
    speech_s = write_mic_wav(wav, piper_speech(LONG_QUESTION), 3.0, 60.0)
    conv = converse(url, wav, 3.0 + speech_s, mouth_box_of_default_avatar())
    span = conv.talking_span()
    result = av_sync(conv)
    result["answer_s"] = round((span[1] - span[0]) / 1000, 1) if span else 0
    print(f"long answer ({result['answer_s']} s): lag first third {result['lag_first_third_ms']} ms, "
          f"last third {result['lag_last_third_ms']} ms, drift {result['drift_ms']} ms", flush=True)
    return result


def smoothness(url: str, seconds: float, tmp: Path) -> dict:
    """Delivered fps per second and freezes over a conversation of ``seconds``: questions every
    20 s, so the avatar alternates talking and idling, as in use."""
    from tests.speech import mouth_box_of_default_avatar, piper_speech

    parts, t = [np.zeros(2 * 16000, np.int16)], 2.0
    while t + 20 <= seconds:
        q = piper_speech(QUESTIONS[int(t) % len(QUESTIONS)])
        parts += [q, np.zeros(int((20 - len(q) / 16000) * 16000), np.int16)]
        t += 20
    parts.append(np.zeros(int((seconds - t + 5) * 16000), np.int16))
    wav = tmp / "smooth.wav"
    sf.write(wav, np.concatenate(parts), 16000, subtype="PCM_16")
    with open_call(url, wav, mouth_box_of_default_avatar()) as (page, _):
        page.wait_for_timeout(int(seconds * 1000))
        conv = _collect(page, 0)
    frames = [(s["t"], s["frames"]) for s in conv.samples if s["frames"]]
    per_second = []
    if frames:
        t0 = frames[0][0]
        for k in range(int((frames[-1][0] - t0) // 1000)):
            window = [(t, f) for t, f in frames if t0 + 1000 * k <= t <= t0 + 1000 * (k + 1)]
            if len(window) >= 2 and window[-1][0] > window[0][0]:
                # Samples every 40 ms do not land on the second's edges: a rate, not a count.
                (ta, fa), (tb, fb) = window[0], window[-1]
                per_second.append(round((fb - fa) * 1000 / (tb - ta), 1))
    video = (conv.events.get("rtp") or {}).get("video") or {}
    result = {
        "seconds": seconds,
        "fps_per_second": per_second,
        "fps": stats(per_second) | {"min": min(per_second) if per_second else None},
        "freeze_count": video.get("freeze_count"),
        "total_freezes_s": video.get("total_freezes_s"),
        "frames_dropped": video.get("frames_dropped"),
        "frames_decoded": video.get("frames_decoded"),
    }
    print(f"smoothness over {seconds:.0f} s: fps median {result['fps']['median']}, min {result['fps']['min']}, "
          f"freezes {result['freeze_count']} ({result['total_freezes_s']} s)", flush=True)
    return result


def run_suite(out_dir: Path, plan: Plan, argv: list[str]) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    results: dict = {
        "command": "python -m bench " + " ".join(argv),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit,
        "hardware": hardware(),
        "plan": plan.__dict__,
    }
    started = time.monotonic()
    results["lipsync_speed"] = lipsync_speed(out_dir, plan)
    results["endpointing"] = bench_endpointing.run(plan.endpointing_runs, out_dir / "endpointing.json")
    proc = AvatarProcess()
    try:
        proc.wait_ready()
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            results["end_to_end"] = end_to_end(proc.url, plan, tmp)
            if plan.long_answer:
                results["av_drift"] = long_answer_drift(proc.url, tmp)
            if plan.barge_in_runs:
                results["barge_in"] = bench_barge_in.run(plan.barge_in_runs, out_dir / "barge_in.json", proc.url)
            results["smoothness"] = smoothness(proc.url, plan.smoothness_s, tmp)
        results["capacity"] = capacity.run(proc.url, plan.capacity_max, plan.capacity_window_s)
    finally:
        proc.stop()
    results["duration_s"] = round(time.monotonic() - started, 1)
    write_json(out_dir / "results.json", results, default=str)
    return results
