"""Endpointing: how long the ASR waits after the user stops, and how often it cuts them off.

For each trailing-silence setting, real silero-vad and our endpointer run over synthesized
utterances (Piper) that hold pauses inside them, as people make: between clauses, and a longer
hesitation. Per setting it reports the endpoint delay (media time from the last voiced window
to the end-of-utterance decision, median and worst) and the share of utterances cut in two.
The default (280 ms: 9 VAD windows) is one 32 ms window above 250 ms, the shortest setting
that cut no utterance in any of our runs (200 ms cut up to half of them in some runs; Piper
samples noise, so each synthesis times the words differently). Media time is used,
so the figures do not depend on how busy the machine is. The browser figure (endpoint delay
per turn as the page sees it) comes from bench/bench_barge_in.py and bench/bench_e2e.py.
Usage: ``python -m bench.bench_endpointing --out bench-results/endpointing.json``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from bench.hardware import hardware
from bench.result_file import write_json

SAMPLE_RATE = 16000
SETTINGS_MS = (160, 200, 250, 280, 300, 400, 500, 700)
# Phrases joined by pauses of the given lengths (s): a person thinking mid-sentence.
UTTERANCES = [
    (["What is the weather like", "in Paris today?"], [0.18]),
    (["Tell me", "about the moon."], [0.22]),
    (["I was wondering,", "could you tell me a joke?"], [0.15]),
    (["Hello there.", "What is your name?"], [0.12]),
    (["So, um,", "what should I cook tonight?"], [0.25]),
    (["Can you explain", "how rainbows", "form in the sky?"], [0.16, 0.2]),
]


class _NullStream:
    def accept(self, pcm: np.ndarray) -> str:
        return ""

    def finish(self) -> str:
        return "text"


class _NullEngine:
    """Endpointing does not depend on the recogniser: the VAD decides."""

    name = "null"

    def new_stream(self) -> _NullStream:
        return _NullStream()


def _trimmed(speech: np.ndarray, threshold: int = 300) -> np.ndarray:
    """Cut Piper's own leading and trailing silence, so the pauses are the ones we insert."""
    loud = np.flatnonzero(np.abs(speech.astype(np.int32)) > threshold)
    return speech[loud[0] : loud[-1] + 1] if loud.size else speech


def _utterance_audio(phrases: list[str], pauses: list[float]) -> np.ndarray:
    from tests.speech import piper_speech

    parts = [np.zeros(int(0.5 * SAMPLE_RATE), np.int16)]
    for i, phrase in enumerate(phrases):
        # Uncached: Piper samples noise, so each synthesis times the words a little differently.
        parts.append(_trimmed(piper_speech.__wrapped__(phrase)))
        if i < len(pauses):
            parts.append(np.zeros(int(pauses[i] * SAMPLE_RATE), np.int16))
    parts.append(np.zeros(int(1.5 * SAMPLE_RATE), np.int16))
    return np.concatenate(parts)


def measure(silence_ms: int, audios: list[np.ndarray]) -> dict:
    from services.asr.settings import AsrSettings
    from services.asr.utterance import Final, SileroVad, UtteranceTracker

    delays, cut = [], 0
    for pcm in audios:
        # A fresh VAD per utterance, as per session: silero carries state from call to call.
        tracker = UtteranceTracker(_NullEngine(), SileroVad(), AsrSettings(endpoint_silence_ms=silence_ms))
        finals = [e for e in tracker.process_recording(pcm) if isinstance(e, Final)]
        cut += len(finals) > 1
        if finals:
            delays.append(finals[-1].endpoint_ms)
    return {
        "silence_ms": silence_ms,
        "endpoint_delay_ms": {
            "median": statistics.median(delays) if delays else None,
            "worst": max(delays) if delays else None,
        },
        "cut_off_rate": cut / len(audios),
        "utterances": len(audios),
    }


def run(runs: int = 3, out: Path = Path("bench-results/endpointing.json"), base_url: str | None = None) -> dict:
    """``runs`` syntheses of each utterance; ``base_url`` is accepted for the suite's uniform
    call and ignored (this runs offline)."""
    audios = [_utterance_audio(p, q) for _ in range(max(1, runs)) for p, q in UTTERANCES]
    rows = [measure(ms, audios) for ms in SETTINGS_MS]
    for row in rows:
        d = row["endpoint_delay_ms"]
        print(f"trailing silence {row['silence_ms']:4d} ms: endpoint delay median {d['median']:.0f} ms, "
              f"worst {d['worst']:.0f} ms, utterances cut in two {row['cut_off_rate']:.0%}")
    safe = [r for r in rows if r["cut_off_rate"] == 0]
    report = {
        "benchmark": "endpointing",
        "hardware": hardware(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "method": "real silero-vad + endpointer over Piper utterances with inner pauses "
                  f"{sorted({p for _, ps in UTTERANCES for p in ps})} s; delay in media time",
        "settings": rows,
        "shortest_setting_without_cut_offs_ms": safe[0]["silence_ms"] if safe else None,
    }
    write_json(out, report)
    print(f"shortest trailing silence that cut no utterance: {report['shortest_setting_without_cut_offs_ms']} ms; wrote {out}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="syntheses of each utterance")
    parser.add_argument("--out", type=Path, default=Path("bench-results/endpointing.json"))
    args = parser.parse_args(argv)
    run(args.runs, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
