"""End-to-end latency in a real browser: end of the user's speech -> first avatar audio.

Starts ``python main.py`` (embedded default), then runs N spoken questions through headless
Chromium with a fake microphone, measuring in the page. Prints median / p95 / worst and writes
JSON. Usage: ``python -m bench.bench_e2e --runs 5 --out bench-results/e2e.json``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench.avatar_process import AvatarProcess
from bench.browser import converse, summary, write_mic_wav
from bench.hardware import hardware

QUESTIONS = [
    "Hello there. What is your name?",
    "What is the weather like today?",
    "Tell me about the moon.",
    "What is your favorite color?",
    "How are you today?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q * (len(ordered) - 1)))))
    return ordered[k]


def run(runs: int, out: Path, base_url: str | None = None) -> dict:
    from tests.speech import mouth_box_of_default_avatar, piper_speech

    proc = None
    if base_url is None:
        proc = AvatarProcess()
        proc.wait_ready()
        base_url = proc.url
    results = []
    try:
        box = mouth_box_of_default_avatar()
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(runs):
                text = QUESTIONS[i % len(QUESTIONS)]
                wav = Path(tmp) / f"q{i}.wav"
                speech_s = write_mic_wav(wav, piper_speech(text), 3.0, 25.0)
                conv = converse(base_url, wav, 3.0 + speech_s, box)
                r = summary(conv)
                r["question"] = text
                results.append(r)
                print(f"run {i + 1}/{runs}: first audio {r['first_audio_ms'] or float('nan'):.0f} ms, "
                      f"{r['fps']:.1f} fps, heard {r['user_text']!r}", flush=True)
    finally:
        if proc is not None:
            proc.stop()
    lat = [r["first_audio_ms"] for r in results if r["first_audio_ms"] is not None]
    fps = [r["fps"] for r in results]
    report = {
        "benchmark": "e2e_first_audio",
        "hardware": hardware(),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "runs": results,
        "first_audio_ms": {
            "n": len(lat),
            "median": statistics.median(lat) if lat else None,
            "p95": percentile(lat, 0.95) if lat else None,
            "worst": max(lat) if lat else None,
            "best": min(lat) if lat else None,
        },
        "fps": {"median": statistics.median(fps) if fps else None, "min": min(fps) if fps else None},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    s = report["first_audio_ms"]
    print(f"end of speech -> first avatar audio over {s['n']} runs: median {s['median']:.0f} ms, "
          f"p95 {s['p95']:.0f} ms, worst {s['worst']:.0f} ms; video fps median {report['fps']['median']}")
    print(f"hardware: {report['hardware']['cpu']} ({report['hardware']['cores']} cores); wrote {out}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-results/e2e.json"))
    parser.add_argument("--url", default=None, help="use an avatar that is already running")
    args = parser.parse_args(argv)
    run(args.runs, args.out, args.url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
