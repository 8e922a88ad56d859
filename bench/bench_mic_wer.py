"""ASR word error rate where the user is: through the browser's microphone path.

``bench_wer`` feeds the recogniser clean 16 kHz audio. A person's words travel further: the
browser's audio processing (echo cancellation, noise suppression, gain control), Opus over
WebRTC, the gateway's resampler to 16 kHz, the voice-activity detector's cut. This benchmark
starts ``python main.py`` (embedded default), plays a WAV of many questions through headless
Chromium's fake microphone, one page per browser setting, and scores the user transcripts the
page receives.

The WAV holds N sentences of the WER set (bench/wer_set.py), each by one of its five voices in
turn, each followed by a pause long enough for the avatar's (shortened) answer, so that every
question is asked of a listening avatar. ``--snr-db 10`` adds white noise under the whole WAV,
as a room would. A transcript is the question whose speech began last before it arrived.

Usage: ``python -m bench.bench_mic_wer --sentences 20 --settings default,ns=0 --snr-db none,10``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf

from bench.avatar_process import AvatarProcess, is_loopback_url
from bench.hardware import hardware
from bench.result_file import write_json
from bench.wer_set import SAMPLE_RATE, Utterance, build_set, load_sentences, normalize
from services.asr.engine import AsrEngine
from services.asr.settings import AsrSettings
from services.asr.whisper_engine import WhisperEngine

PAUSE_S = 4.5  # after each question: endpoint + answer (~8 tokens) + margin
LEAD_S = 2.0  # before the first question: the call settles
# Short answers keep the pauses short; the words asked are what is measured here.
AVATAR_ENV = {"AVATAR_LLM_MAX_NEW_TOKENS": "8"}


def one_voice_each(utterances: list[Utterance], voices: int = 5) -> list[Utterance]:
    """Sentence i by voice i mod 5 (build_set gives every sentence in every voice, in order)."""
    return [utterances[i * voices + i % voices] for i in range(len(utterances) // voices)]


def mic_track(utterances: list[Utterance], snr_db: float | None, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """The fake microphone's audio and when each question starts in it (s)."""
    parts, starts, at = [np.zeros(int(LEAD_S * SAMPLE_RATE), np.int16)], [], LEAD_S
    for u in utterances:
        starts.append(at)
        parts += [u.pcm, np.zeros(int(PAUSE_S * SAMPLE_RATE), np.int16)]
        at += len(u.pcm) / SAMPLE_RATE + PAUSE_S
    audio = np.concatenate(parts).astype(np.float64)
    if snr_db is not None:
        speech = np.concatenate([u.pcm for u in utterances]).astype(np.float64)
        voiced = speech[np.abs(speech) > 0.02 * np.abs(speech).max()]
        noise_rms = np.sqrt(np.mean(voiced**2)) / 10 ** (snr_db / 20)
        audio += np.random.default_rng(seed).standard_normal(len(audio)) * noise_rms
    return np.clip(audio, -32768, 32767).astype(np.int16), starts


def assign(finals: list[tuple[float, str]], starts: list[float]) -> list[str]:
    """Each final user transcript (WAV time s, text) to the question whose speech began last
    before it; a question heard in two pieces gets both."""
    heard = [[] for _ in starts]
    for at, text in finals:
        k = max((i for i, s in enumerate(starts) if s <= at), default=None)
        if k is not None and text.strip():
            heard[k].append(text.strip())
    return [" ".join(h) for h in heard]


def run_setting(url: str, wav: Path, duration_s: float, starts: list[float], setting: str) -> list[str]:
    from bench.browser import open_call
    from tests.speech import mouth_box_of_default_avatar

    query = "" if setting == "default" else setting
    with open_call(url, wav, mouth_box_of_default_avatar(), query=query) as (page, gum_at):
        page.wait_for_timeout(int((duration_s + 3.0) * 1000))
        events = page.evaluate("window.__wsEvents")
    finals = [
        ((e["t"] - gum_at) / 1000, e.get("text") or "")
        for e in events
        if e["type"] == "transcript" and e.get("role") == "user" and e.get("final")
    ]
    return assign(finals, starts)


def score(utterances: list[Utterance], heard: list[str]) -> dict:
    refs = [normalize(u.reference) for u in utterances]
    hyps = [normalize(h) for h in heard]
    return {
        "wer": jiwer.wer(refs, hyps),
        "exact": sum(r == h for r, h in zip(refs, hyps)) / len(refs),
        "missed": sum(not h for h in hyps),
        "utterances": [
            {"reference": u.reference, "family": u.family, "speed": u.speed, "heard": h}
            for u, h in zip(utterances, heard)
        ],
    }


def direct(engine: AsrEngine, utterances: list[Utterance], audio: np.ndarray, starts: list[float]) -> list[str]:
    """The baseline: each question of the track (noise included) straight into the engine,
    with the set's own cut."""
    out = []
    for u, start in zip(utterances, starts, strict=True):
        first = int(start * SAMPLE_RATE)
        out.append(engine.transcribe(audio[first : first + len(u.pcm)]))
    return out


def _snr(value: str) -> float | None:
    return None if value == "none" else float(value)


def _print(result: dict, n: int, took_s: float | None = None) -> None:
    snr = result["snr_db"]
    took = "" if took_s is None else f" ({took_s:.0f} s)"
    print(f"noise {'none' if snr is None else f'{snr:g} dB SNR'}, {result['setting']}: "
          f"WER {100 * result['wer']:.1f}%, exact {100 * result['exact']:.0f}%, "
          f"missed {result['missed']} of {n}{took}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=20, help="questions per run (of the WER set's 40)")
    parser.add_argument("--settings", default="default,ns=0",
                        help="comma-separated page switches to compare: default, ns=0, agc=0, ns=0&agc=0 "
                             "(\"direct\", the same audio straight into Whisper, always runs)")
    parser.add_argument("--snr-db", default="none,10", help="comma-separated noise levels; none = clean")
    parser.add_argument("--out", type=Path, default=Path("bench-results/mic_wer.json"))
    parser.add_argument("--url", default=None, help="use an avatar that is already running (loopback)")
    args = parser.parse_args(argv)
    if args.sentences < 1:
        parser.error("--sentences must be at least 1")
    if args.url is not None and not is_loopback_url(args.url):
        parser.error("--url must be a loopback address")
    utterances = one_voice_each(list(build_set(load_sentences()[: args.sentences])))
    tracks = {snr: mic_track(utterances, snr) for snr in (_snr(v) for v in args.snr_db.split(","))}
    results = []
    engine = WhisperEngine.from_settings(AsrSettings.from_env())
    for snr, (audio, starts) in tracks.items():
        results.append({"snr_db": snr, "setting": "direct", **score(utterances, direct(engine, utterances, audio, starts))})
        _print(results[-1], len(utterances))
    del engine  # the avatar's own Whisper does the rest
    proc = None
    if args.url is None:
        proc = AvatarProcess(env=AVATAR_ENV)
        proc.wait_ready()
    url = args.url or proc.url
    try:
        for snr, (audio, starts) in tracks.items():
            wav = args.out.with_suffix(f".snr-{snr}.wav")
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, audio, SAMPLE_RATE, subtype="PCM_16")
            for setting in args.settings.split(","):
                started = time.perf_counter()
                heard = run_setting(url, wav, len(audio) / SAMPLE_RATE, starts, setting)
                results.append({"snr_db": snr, "setting": f"browser {setting}", **score(utterances, heard)})
                _print(results[-1], len(utterances), time.perf_counter() - started)
    finally:
        if proc is not None:
            proc.stop()
    report = {
        "benchmark": "mic_wer",
        "hardware": hardware(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "method": "WER-set questions (one voice each, in turn) through headless Chromium's fake "
                  "microphone, WebRTC and the running avatar's ASR; user finals assigned by time",
        "avatar_env": AVATAR_ENV,
        "results": results,
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
