"""End-to-end latency in a real browser, as a listener hears it: last word -> first answer heard.

Starts ``python main.py`` (embedded default), then asks spoken questions through headless
Chromium with a fake microphone, in several voices and speeds (espeak-ng and Piper), and
measures in the page (issue 24):

- end of speech: the last 10 ms block of the question's voice above -40 dBFS (the near-silence
  a synthetic voice trails is not speech);
- first audio: the first 10 ms block of the avatar's voice above -40 dBFS as the page's
  ``<audio>`` element plays it (``bench.element_path``): the block is found by an AudioWorklet
  tap (``bench.browser``, ``bench.heard``), whose WebAudio copy plays some 30-40 ms after the
  element's, and timed on the element's own path (the receiver's per-packet delivery record plus
  Chrome's playout delay). The tap's own figure is printed beside it, and Chrome's playout clock
  (``estimatedPlayoutTimestamp``) as an independent check of both.

Each run prints three spans split by the gateway's per-turn timestamps: uplink + VAD, server,
downlink + playout; and, for comparison, the old definition (the clock started at the end of
the question's WAV segment, trailing near-silence included, the figure the README quoted
until 2026-12-06). Prints median / p95 / worst and writes JSON.

``--compare NAME=VALUE`` starts a second avatar with that environment variable set and asks
every question of both, one after the other, alternating which goes first: a paired
comparison on the same (busy) machine. Usage::

    python -m bench.bench_e2e --runs 20 --out bench-results/e2e.json
    python -m bench.bench_e2e --runs 10 --compare AVATAR_TTS_MAX_LEAD_MS=0
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.avatar_process import AvatarProcess, is_loopback_url
from bench.browser import Conversation, converse, summary, write_mic_wav
from bench.hardware import hardware
from bench.element_path import listener_latency
from bench.result_file import write_json

QUESTIONS = [
    "Hello there. What is your name?",
    "What is the weather like today?",
    "Tell me about the moon.",
    "What is your favorite color?",
    "How are you today?",
    "What is the capital of France?",
    "Can you recommend a good book?",
    "Why is the sky blue?",
]

# (family, espeak voice, speed): espeak-ng speed in words a minute, Piper's a length scale
# (< 1 is faster). Five voices, so over 20 runs every voice asks four different questions.
VOICES = [
    ("espeak", "en-us", 175),
    ("piper", "joe", 1.0),
    ("espeak", "en-gb", 140),
    ("espeak", "en+f3", 210),
    ("espeak", "en+m3", 175),
]
LEAD_S = 3.0
SPANS = ("total_ms", "uplink_vad_ms", "server_ms", "downlink_ms", "tap_total_ms", "tap_downlink_ms",
         "tap_minus_element_ms", "clock_minus_element_ms", "clock_minus_tap_ms", "old_definition_ms",
         "opening_longest_pause_ms")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q * (len(ordered) - 1)))))
    return ordered[k]


def describe(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "median": None, "p95": None, "worst": None, "best": None}
    return {"n": len(values), "median": statistics.median(values), "p95": percentile(values, 0.95),
            "worst": max(values), "best": min(values)}


def speaker() -> Callable[[str, tuple], np.ndarray]:
    """speak(text, voice): 16 kHz int16 speech in one of VOICES (Piper is loaded once)."""
    from bench.wer_set import PiperSpeaker, espeak

    piper: list[PiperSpeaker] = []

    def speak(text: str, voice: tuple) -> np.ndarray:
        family, name, speed = voice
        if family == "espeak":
            return espeak(text, name, int(speed))
        if not piper:
            piper.append(PiperSpeaker())
        return piper[0](text, float(speed))

    return speak


def heard_spans(conv: Conversation, question_16k: np.ndarray) -> dict:
    """A listener's latency and its three spans (``bench.element_path``) for a question asked
    with ``write_mic_wav(..., LEAD_S, ...)``."""
    return listener_latency(conv.taps, conv.events.get("ws") or [], question_16k, LEAD_S)


def ask(url: str, wav_dir: Path, i: int, text: str, voice: tuple, pcm: np.ndarray, box, raw: list | None = None) -> dict:
    wav = wav_dir / f"q{i}.wav"
    speech_s = write_mic_wav(wav, pcm, LEAD_S, 25.0)
    conv = converse(url, wav, LEAD_S + speech_s, box)
    r = summary(conv)
    r.update(heard_spans(conv, pcm))
    if raw is not None:
        # What the page recorded of the answer (the microphone tap left out), to check the
        # element path's figures offline.
        raw.append({"run": i, "taps": {k: v for k, v in conv.taps.items() if k != "mic"},
                    "tap_heard_page_ms": r["tap_heard_page_ms"], "sent_page_ms": r["sent_page_ms"],
                    "speech_end_page_ms": r["speech_end_page_ms"]})
    # The old definition: the clock started at the end of the WAV's speech segment.
    r["old_definition_ms"] = r.pop("first_audio_ms")
    r["audio_jitter_buffer_ms"] = ((conv.events.get("rtp") or {}).get("audio") or {}).get("jitter_buffer_ms")
    r["question"] = text
    r["voice"] = f"{voice[0]} {voice[1]} {voice[2]}"
    return r


def _line(tag: str, r: dict) -> str:
    def f(key: str) -> str:
        v = r.get(key)
        return "  n/a" if v is None else f"{v:5.0f}"

    parts = " + ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in (r.get("server_parts") or {}).items()
                       if v is not None)
    return (f"{tag}: heard {f('total_ms')} ms = uplink+VAD {f('uplink_vad_ms')} + server {f('server_ms')}"
            f" + downlink+playout {f('downlink_ms')} | WebAudio tap {f('tap_total_ms')} (tap - element"
            f" {f('tap_minus_element_ms')}; playout clock - element {f('clock_minus_element_ms')}, - tap"
            f" {f('clock_minus_tap_ms')}) | old def {f('old_definition_ms')} | longest pause in its"
            f" first 4 s {f('opening_longest_pause_ms')} | {r['voice']:<18}"
            f" heard {r['user_text']!r}\n    server = {parts}")


def run(runs: int, out: Path, base_url: str | None = None, compare: str | None = None,
        warmup: bool = True, raw_out: Path | None = None) -> dict:
    from tests.speech import mouth_box_of_default_avatar

    procs: list[AvatarProcess] = []
    urls: dict[str, str] = {}
    try:
        if base_url is None:
            procs.append(AvatarProcess())
        if compare:
            name, _, value = compare.partition("=")
            procs.append(AvatarProcess(env={name: value}))
        for p in procs:
            p.wait_ready()
        urls["A"] = base_url or procs[0].url
        if compare:
            urls["B"] = procs[-1].url
        results: dict[str, list[dict]] = {k: [] for k in urls}
        raw: list | None = [] if raw_out is not None else None
        speak = speaker()
        box = mouth_box_of_default_avatar()
        with tempfile.TemporaryDirectory() as tmp:
            # A fresh avatar's first answer pays one-time costs (first prompt, caches): measured
            # 2-3x the next ones, so every avatar answers one question before the count starts.
            for tag in list(urls)[: len(urls) if warmup else 0]:
                r = ask(urls[tag], Path(tmp), -1, QUESTIONS[-1], VOICES[0], speak(QUESTIONS[-1], VOICES[0]), box)
                print("warm-up " + _line(tag, r), flush=True)
            for i in range(runs):
                text = QUESTIONS[i % len(QUESTIONS)]
                voice = VOICES[i % len(VOICES)]
                pcm = speak(text, voice)
                order = list(urls) if i % 2 == 0 else list(urls)[::-1]
                for tag in order:
                    r = ask(urls[tag], Path(tmp), i, text, voice, pcm, box, raw)
                    results[tag].append(r)
                    print(f"run {i + 1}/{runs} " + _line(tag, r), flush=True)
    finally:
        for p in procs:
            p.stop()
    report = {
        "benchmark": "e2e_heard",
        "definition": "last 10 ms block of the question's voice above -40 dBFS -> first 10 ms block "
                      "of the answer above -40 dBFS as the page's <audio> element plays it "
                      "(tap_total_ms: the same block from the AudioWorklet tap's WebAudio copy)",
        "hardware": hardware(),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "compare": compare,
        "configs": {},
    }
    for tag, rs in results.items():
        report["configs"][tag] = {
            "env": compare if tag == "B" else "",
            "runs": rs,
            **{k: describe([r[k] for r in rs if r.get(k) is not None]) for k in SPANS},
            "fps": describe([r["fps"] for r in rs]),
        }
    write_json(out, report)
    if raw_out is not None:
        write_json(raw_out, raw, indent=None)
    for tag, c in report["configs"].items():
        label = f"{tag} ({c['env'] or 'as configured'})"
        for k in SPANS:
            s = c[k]
            if s["n"]:
                print(f"{label} {k:<18} n={s['n']:2d} median {s['median']:5.0f}  p95 {s['p95']:5.0f}  "
                      f"worst {s['worst']:5.0f}")
    if compare:
        report["paired_b_minus_a"] = {}
        for k in SPANS:
            diffs = [b[k] - a[k] for a, b in zip(results["A"], results["B"])
                     if a.get(k) is not None and b.get(k) is not None]
            if diffs:
                report["paired_b_minus_a"][k] = {"n": len(diffs), "median": statistics.median(diffs),
                                                 "mean": statistics.mean(diffs)}
                print(f"paired B - A {k:<26} median {statistics.median(diffs):+5.0f} ms, "
                      f"mean {statistics.mean(diffs):+5.0f} ms over {len(diffs)} pairs")
        write_json(out, report)
    print(f"hardware: {report['hardware']['cpu']} ({report['hardware']['cores']} cores); wrote {out}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-results/e2e.json"))
    parser.add_argument("--url", default=None, help="use an avatar that is already running (loopback only)")
    parser.add_argument("--compare", default=None, metavar="NAME=VALUE",
                        help="also start an avatar with this environment variable and pair every question")
    parser.add_argument("--no-warmup", action="store_true", help="count the first answer too")
    parser.add_argument("--raw", type=Path, default=None, help="also write what the page recorded of each answer here")
    args = parser.parse_args(argv)
    if args.url is not None and not is_loopback_url(args.url):
        parser.error("--url must be a loopback address (http://127.0.0.1:PORT)")
    if args.compare is not None and "=" not in args.compare:
        parser.error("--compare takes NAME=VALUE")
    run(args.runs, args.out, args.url, args.compare, warmup=not args.no_warmup, raw_out=args.raw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
