"""Barge-in latency in a real browser: from the user's onset to the avatar's audio dropping.

Each run opens the page in headless Chromium whose fake microphone asks for a long answer,
waits, then talks over the avatar while it answers. Measured in the page: the level of the
avatar's voice as played (a WebAudio analyser on the received stream, every 10 ms) against
the moment the second utterance starts in the microphone. A run counts only if the avatar was
audibly talking just before the user cut in. Also reports the endpointing delay of each turn
(the trailing silence the ASR waited out, from the page's stats) and that a second answer
followed. Usage: ``python -m bench.bench_barge_in --runs 5 --out bench-results/barge_in.json``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.avatar_process import AvatarProcess
from bench.browser import Conversation, converse_with_barge_in, silence_after
from bench.hardware import hardware
from bench.result_file import write_json

QUESTION = "Please tell me a long story about a brave knight and a dragon."
INTERRUPTION = "Stop. What is your name?"
LEAD_S = 3.0
# Question end -> interruption: first audio arrives ~2 s after the question here (up to ~4 s
# on a loaded 2-core machine); the answer then runs for ~20 s, so these land mid-answer. Runs
# rotate through them so the interruption hits different points of the speech.
GAPS_S = (6.0, 5.0, 7.0, 5.5, 6.5)
TAIL_S = 25.0
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class BargeInScript:
    wav: Path
    question_end_s: float
    onset_s: float  # first voiced sample of the interruption, in the WAV


def first_voiced_s(speech: np.ndarray, threshold: int = 1000) -> float:
    voiced = np.flatnonzero(np.abs(speech.astype(np.int32)) > threshold)
    return float(voiced[0]) / SAMPLE_RATE if voiced.size else 0.0


def write_script(path: Path, gap_s: float = GAPS_S[0]) -> BargeInScript:
    from tests.speech import piper_speech

    question, interruption = piper_speech(QUESTION), piper_speech(INTERRUPTION)
    silence = lambda s: np.zeros(int(s * SAMPLE_RATE), np.int16)  # noqa: E731
    pcm = np.concatenate([silence(LEAD_S), question, silence(gap_s), interruption, silence(TAIL_S)])
    sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")
    question_end = LEAD_S + len(question) / SAMPLE_RATE
    onset = question_end + gap_s + first_voiced_s(interruption)
    return BargeInScript(path, question_end, onset)


def talking_before(conv: Conversation, at_ms: float, span_ms: float = 200, threshold: float = 1e-4) -> bool:
    """Whether the avatar's audio was playing in the ``span_ms`` before ``at_ms`` (longer than
    the gaps between its words, shorter than a pause for the next clause)."""
    return any(r > threshold for t, r in conv.energy_rate() if at_ms - span_ms <= t <= at_ms)


def analyse(conv: Conversation) -> dict:
    onset = conv.events["barge_in_onset_ms"]
    silent_at = silence_after(conv, onset)
    avatar_turns = sorted({e["turn"] for e in conv.transcript if e.get("role") == "avatar" and e.get("text")})
    interrupted = [e for e in conv.transcript if e.get("role") == "avatar" and e.get("interrupted")]
    resumed = silent_at is not None and any(
        r > 1e-4 for t, r in conv.energy_rate() if t > silent_at + 800
    )
    # When the gateway's "interrupted" event reached the page: splits the latency into
    # detection (mic -> ASR onset -> gateway) and playout (flush -> silence heard).
    notified = [e["t"] for e in conv.events.get("ws", []) if e["type"] == "interrupted" and e["t"] >= onset - 500]
    received = None if silent_at is None else round(silent_at - onset, 1)
    notified_ms = round(notified[0] - onset, 1) if notified else None
    # The page mutes its audio element the moment the event arrives (client.js), so what the
    # person hears stops at whichever comes first.
    heard = min((x for x in (received, notified_ms) if x is not None), default=None)
    return {
        "talking_at_onset": talking_before(conv, onset),
        "server_notified_ms": notified_ms,
        "received_audio_silent_ms": received,
        "barge_in_ms": heard,
        "answer_turns": avatar_turns,
        "first_answer_marked_interrupted": bool(interrupted),
        "second_answer_audio": resumed,
        "user_text": conv.user_text(),
        "avatar_text": conv.avatar_text(),
        "endpoint_ms": ((conv.events.get("stats") or {}).get("stages") or {}).get("endpoint_ms"),
        "last_turn_stats": conv.events.get("stats"),
    }


def summarise(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "median": None, "worst": None, "best": None}
    return {"n": len(values), "median": statistics.median(values), "worst": max(values), "best": min(values)}


def run(runs: int, out: Path, base_url: str | None = None, echo_cancellation: bool = True) -> dict:
    from tests.speech import mouth_box_of_default_avatar

    proc = None
    if base_url is None:
        proc = AvatarProcess()
        proc.wait_ready()
        base_url = proc.url
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(runs):
                script = write_script(Path(tmp) / f"barge_in_{i}.wav", GAPS_S[i % len(GAPS_S)])
                conv = converse_with_barge_in(
                    base_url, script.wav, script.question_end_s, script.onset_s,
                    mouth_box_of_default_avatar(), echo_cancellation=echo_cancellation,
                )
                r = analyse(conv)
                results.append(r)
                print(f"run {i + 1}/{runs}: barge-in {r['barge_in_ms']} ms heard "
                      f"(page notified and muted at {r['server_notified_ms']} ms, "
                      f"received audio silent at {r['received_audio_silent_ms']} ms) "
                      f"(talking at onset: {r['talking_at_onset']}), second answer: {r['second_answer_audio']}, "
                      f"endpoint {r['endpoint_ms']} ms", flush=True)
    finally:
        if proc is not None:
            proc.stop()
    valid = [r for r in results if r["talking_at_onset"] and r["barge_in_ms"] is not None]
    received = [r["received_audio_silent_ms"] for r in valid if r["received_audio_silent_ms"] is not None]
    notified = [r["server_notified_ms"] for r in valid if r["server_notified_ms"] is not None]
    endpoint = [r["endpoint_ms"] for r in results if r["endpoint_ms"] is not None]
    report = {
        "benchmark": "barge_in",
        "hardware": hardware(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "method": "page time of the interruption's first voiced sample -> the earlier of: start of "
                  ">= 800 ms of silence in the avatar's received audio (WebAudio analyser on the "
                  "stream, 10 ms sampling), and the 'interrupted' event reaching the page (which "
                  "mutes the audio element at once)",
        "echo_cancellation": echo_cancellation,
        "runs": results,
        "barge_in_ms": summarise([r["barge_in_ms"] for r in valid]),
        "page_notified_ms": summarise(notified),
        "received_audio_silent_ms": summarise(received),
        "invalid_runs": len(results) - len(valid),
        "endpoint_ms": summarise(endpoint),
        "second_answer_rate": sum(r["second_answer_audio"] for r in results) / max(1, len(results)),
    }
    write_json(out, report)
    b, e = report["barge_in_ms"], report["endpoint_ms"]
    r = report["received_audio_silent_ms"]
    print(f"barge-in (user onset -> avatar silent, in the browser) over {b['n']} runs: "
          f"median {b['median']} ms, worst {b['worst']} ms (received audio silent: median "
          f"{r['median']} ms, worst {r['worst']} ms); endpointing delay median {e['median']} ms, "
          f"worst {e['worst']} ms; wrote {out}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-results/barge_in.json"))
    parser.add_argument("--url", default=None, help="use an avatar that is already running")
    parser.add_argument("--no-ec", action="store_true", help="turn the browser's echo cancellation off")
    args = parser.parse_args(argv)
    run(args.runs, args.out, args.url, echo_cancellation=not args.no_ec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
