"""Concurrency: end of speech -> first avatar audio when several people ask at the same moment.

Starts ``python main.py`` (embedded default, offline), then for each level N: N WebRTC clients
(aiortc, tests/rtc_client.py) connect, and at one moment each plays the same spoken question
(Piper speech, tests/speech.py) into its microphone track. The ``--ws-only`` variant adds one
more client that only opens the WebSocket, types the question as ``text`` at that moment and
never makes a WebRTC call (so nothing ever plays its answer).

Per client it reports:

- end of speech -> first avatar audio (ms) as the client hears it: from when the last sample
  of the question left its microphone track to the first received audio packet louder than
  silence (``first_audio_ms``), and the gateway's own per-turn figure from its ``stats``
  message (``gateway_first_audio_ms``: the end of speech the ASR found -> the first unit
  played);
- received video fps per whole second from the question on, the lowest second, and the
  number of seconds below 20 fps.

Per level it also reports the cores each of the avatar's processes (and this benchmark's, which
holds the clients) used in the second after the end of the question, while the answers start.

The clients decode video on the same CPUs as the avatar, so on a small machine the fps is a
floor. Every wait is bounded (``--timeout-s`` after the end of speech); only loopback is used.

Usage: ``python -m bench.bench_concurrency --clients 1 2 3 --ws-only --rounds 3 --out bench-results``
(``--ws-only`` alone means one real client plus the WS-only one; ``--ws-only 1 2`` names levels).
With ``--rounds R`` the whole list of levels runs R times, interleaved (1, 3, 1, 3, ...), so a
slow minute of a shared machine lands on every level alike. The summary gives, per level, the
median and worst first audio over all its clients and rounds, and the worst as a multiple of
the single-client median (issue 24's goal: at most 2x for 3 clients at once, at 25 fps).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import av
import numpy as np

from bench.avatar_process import ROOT, AvatarProcess, is_loopback_url
from bench.bench_idle_cpu import _children, _cpu_s, cores_between
from bench.hardware import hardware
from bench.result_file import write_json
from bench.webrtc_clients import CONNECT_TIMEOUT_S, connect_clients, speech_48k

QUESTION = "Hello there. What is your name?"
TYPED_QUESTION = "Hello there. What is your name?"
SLOW_FPS = 20.0
# A received audio packet whose peak is above this is the avatar's voice (Opus-decoded
# silence is 0; speech peaks in the thousands).
VOICE_PEAK = 500.0
MAX_CLIENTS = 8  # the gateway's default session limit
WARM_UP_FRAMES = 25  # one second of idle video per client before the question
SETTLE_S = 1.0  # after the last awaited event, so the received tracks catch up
# CPU per process is summed over this long from the end of the question: while the answers
# start (three at once take about a second here), what each stage and the clients spend.
CPU_WINDOW_S = 1.0


@dataclass(frozen=True, slots=True)
class ClientResult:
    client: int
    heard: str | None  # what the ASR heard (the user's final transcript)
    first_audio_ms: float | None  # end of speech -> first received voice, at the client
    gateway_first_audio_ms: float | None  # the gateway's stats message, if the answer ended
    gateway_stages_ms: dict[str, float]  # every stage of that stats message (where the time went)
    answered: bool  # the answer played to its end within the time allowed
    fps_per_second: list[float]
    fps_min: float | None
    secs_below_20fps: int
    # Longest silence between the answer's first and last voiced packet (ms): sentence pauses
    # are a few hundred ms; a voice that outran its synthesis leaves longer holes.
    longest_gap_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Level:
    clients: int
    ws_only: bool
    speech_s: float
    timeout_s: float
    results: list[ClientResult]
    ws_only_events: dict[str, int] | None  # event types the WS-only client got, counted
    # Cores each process kept busy over CPU_WINDOW_S from the end of the question (the
    # benchmark's own process is the clients); None when the avatar was not started here.
    cores_after_speech: dict[str, float] | None = None

    @property
    def label(self) -> str:
        return f"{self.clients} + ws-only" if self.ws_only else str(self.clients)


def timed_mic_class():  # noqa: ANN201 (a class built on the test client's track)
    """A microphone track that notes when a played clip's last sample went out.

    Built on tests/rtc_client.PcmTrack: under load the sender can fall behind its 20 ms
    schedule and catch up in a burst, so "play time + clip length" is not when speech ended.
    """
    from tests.rtc_client import PcmTrack

    class TimedMic(PcmTrack):
        def __init__(self) -> None:
            super().__init__()
            self._left = 0
            self._starting = False
            self.clip_started_at: float | None = None
            self.clip_ended_at: float | None = None

        def play(self, pcm48k: np.ndarray) -> None:
            super().play(pcm48k)
            self._starting = self._left <= 0
            self._left += len(pcm48k)
            self.clip_ended_at = None

        async def recv(self) -> av.AudioFrame:
            frame = await super().recv()
            if self._starting:
                self._starting = False
                self.clip_started_at = time.monotonic()
            if self._left > 0:
                self._left -= frame.samples
                if self._left <= 0:
                    self.clip_ended_at = time.monotonic()
            return frame

    return TimedMic


def per_second_fps(times: list[float], start: float, end: float) -> list[float]:
    """Frames received in each whole second of [start, end)."""
    seconds = int(end - start)
    counts = [0] * seconds
    for t in times:
        k = int(t - start)
        if 0 <= k < seconds and t >= start:
            counts[k] += 1
    return [float(c) for c in counts]


class WsOnlyClient:
    """A page that opens the WebSocket and types, but never makes a WebRTC call."""

    def __init__(self, base_url: str) -> None:
        self._url = base_url.replace("http", "ws") + "/ws"
        self.event_types: dict[str, int] = {}
        self._config = asyncio.Event()

    async def __aenter__(self) -> "WsOnlyClient":
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self._url)
        self._reader = asyncio.create_task(self._read(), name="ws-only-reader")
        await self._ws.send_json({"type": "hello", "version": 1})
        await asyncio.wait_for(self._config.wait(), CONNECT_TIMEOUT_S)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        await self._ws.close()
        await self._http.close()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        async for msg in self._ws:
            kind = json.loads(msg.data).get("type", "?")
            self.event_types[kind] = self.event_types.get(kind, 0) + 1
            if kind == "config":
                self._config.set()

    async def ask(self, text: str) -> None:
        await self._ws.send_json({"type": "text", "text": text})


async def _wait_until(client, pred, deadline: float) -> dict | None:  # noqa: ANN001
    """The first event matching ``pred`` before ``deadline`` (monotonic), else None."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    try:
        return await client.wait_event(pred, remaining)
    except TimeoutError:
        return None


def _first_voice_at(client, after: float) -> float | None:  # noqa: ANN001
    return next((t for t, peak in client.audio_levels if t > after and peak > VOICE_PEAK), None)


def longest_gap_ms(levels: list[tuple[float, float]], after: float) -> float | None:
    """Longest run without voice between the first and last voiced packet after ``after``."""
    voiced = [t for t, peak in levels if t > after and peak > VOICE_PEAK]
    if len(voiced) < 2:
        return None
    return round(max(b - a for a, b in zip(voiced, voiced[1:])) * 1000, 1)


async def cores_after(pids: list[int], start: float, seconds: float) -> dict[str, float]:
    """Cores each named process used over ``seconds`` from ``start`` (monotonic)."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    before, t0 = _cpu_s(pids), time.monotonic()
    await asyncio.sleep(seconds)
    return cores_between(before, _cpu_s(pids), time.monotonic() - t0)


def _is_speaking(e: dict) -> bool:
    return e.get("type") == "state" and e.get("state") == "speaking"


def _is_answer_end(e: dict) -> bool:
    return e.get("type") == "transcript" and e.get("role") == "avatar" and bool(e.get("final"))


async def measure_level(
    base_url: str,
    clients: int,
    ws_only: bool = False,
    timeout_s: float = 45.0,
    whole_answers: bool = True,
    question: str = QUESTION,
    avatar_pid: int | None = None,
) -> Level:
    """One level: ``clients`` spoken questions at once (plus a WS-only typed one).

    Waits, at most ``timeout_s`` after the end of speech, for every real client's answer to
    start playing (``whole_answers=False``) or to play to its end (``True``).
    """
    if not 1 <= clients + ws_only <= MAX_CLIENTS:
        raise ValueError(f"between 1 and {MAX_CLIENTS} clients, not {clients + ws_only}")
    pcm = speech_48k(question)
    speech_s = len(pcm) / 48000
    mic_class = timed_mic_class()
    async with AsyncExitStack() as stack:
        rtc = await connect_clients(stack, base_url, clients, mic_class=mic_class)
        typist = await stack.enter_async_context(WsOnlyClient(base_url)) if ws_only else None
        # Idle video flowing to everyone first, so the question does not race the call setup.
        warm_deadline = time.monotonic() + 10.0
        while time.monotonic() < warm_deadline and min(len(c.video_times) for c in rtc) < WARM_UP_FRAMES:
            await asyncio.sleep(0.1)  # RtcClient signals no event per frame; bounded by the deadline

        asked_at = time.monotonic()
        for c in rtc:
            c.mic.play(pcm)
        cpu = None
        if avatar_pid is not None:
            pids = [*_children(avatar_pid), os.getpid()]
            cpu = asyncio.create_task(cores_after(pids, asked_at + speech_s, CPU_WINDOW_S), name="cpu-window")
        if typist is not None:
            await typist.ask(TYPED_QUESTION)
        deadline = asked_at + speech_s + 0.1 + timeout_s
        done = _is_answer_end if whole_answers else _is_speaking
        for c in rtc:
            await _wait_until(c, done, deadline)
        await asyncio.sleep(SETTLE_S)
        ended_at = time.monotonic()

        results = []
        for i, c in enumerate(rtc):
            speech_end = c.mic.clip_ended_at or asked_at + speech_s
            voice_at = _first_voice_at(c, asked_at)
            heard = next((e["text"] for e in c.events
                          if e.get("type") == "transcript" and e.get("role") == "user" and e.get("final")), None)
            stats = next((e for e in c.events if e.get("type") == "stats"), None)
            fps = per_second_fps(c.video_times, asked_at, ended_at)
            results.append(ClientResult(
                client=i,
                heard=heard,
                first_audio_ms=None if voice_at is None else round((voice_at - speech_end) * 1000, 1),
                gateway_first_audio_ms=(stats or {}).get("stages", {}).get("first_audio_ms"),
                gateway_stages_ms=dict((stats or {}).get("stages", {})),
                answered=any(_is_answer_end(e) for e in c.events),
                fps_per_second=fps,
                fps_min=min(fps) if fps else None,
                secs_below_20fps=sum(1 for f in fps if f < SLOW_FPS),
                longest_gap_ms=longest_gap_ms(c.audio_levels, asked_at + speech_s),
            ))
        events = dict(typist.event_types) if typist is not None else None
        cores = await cpu if cpu is not None else None  # its window ended long before the settle
    return Level(clients, ws_only, round(speech_s, 2), timeout_s, results, events, cores)


def _seconds(ms: float | None, timeout_s: float) -> str:
    return f">{timeout_s:.0f}" if ms is None else f"{ms / 1000:.1f}"


def table(levels: list[Level]) -> str:
    rows = [("clients", "per-client first audio (s)", "fps min", "secs<20fps")]
    for lv in levels:
        fps = [r.fps_min for r in lv.results if r.fps_min is not None]
        rows.append((
            lv.label,
            " / ".join(_seconds(r.first_audio_ms, lv.timeout_s) for r in lv.results),
            f"{min(fps):.0f}" if fps else "-",
            " / ".join(str(r.secs_below_20fps) for r in lv.results),
        ))
    return _aligned(rows)


def _aligned(rows: list[tuple[str, ...]]) -> str:
    """Rows of cells as text columns, each as wide as its widest cell."""
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    return "\n".join(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def summarize(levels: list[Level]) -> dict[str, dict]:
    """Per level label: first audio over every client and round, fps, and the ratios."""
    by_label: dict[str, list[Level]] = {}
    for lv in levels:
        by_label.setdefault(lv.label, []).append(lv)
    singles = [r.first_audio_ms for lv in by_label.get("1", []) for r in lv.results if r.first_audio_ms is not None]
    single_median = statistics.median(singles) if singles else None
    out: dict[str, dict] = {}
    for label, runs in by_label.items():
        results = [r for lv in runs for r in lv.results]
        audio = [r.first_audio_ms for r in results if r.first_audio_ms is not None]
        fps = [r.fps_min for r in results if r.fps_min is not None]
        worst = max(audio) if len(audio) == len(results) and audio else None  # None: someone never heard
        out[label] = {
            "rounds": len(runs),
            "clients_measured": len(results),
            "first_audio_median_ms": round(statistics.median(audio), 1) if audio else None,
            "first_audio_worst_ms": worst,
            "worst_over_single_median": None if worst is None or not single_median else round(worst / single_median, 2),
            "median_over_single_median": None if not audio or not single_median
            else round(statistics.median(audio) / single_median, 2),
            "fps_min": min(fps) if fps else None,
            "secs_below_20fps": sum(r.secs_below_20fps for r in results),
            "unanswered": sum(1 for r in results if not r.answered),
            "longest_gap_ms": max((r.longest_gap_ms for r in results if r.longest_gap_ms is not None), default=None),
        }
    return out


def summary_table(summary: dict[str, dict]) -> str:
    rows = [("clients", "rounds", "first audio median / worst (s)", "worst / single median", "fps min", "secs<20fps",
             "longest gap (ms)")]
    for label, s in summary.items():
        median = "-" if s["first_audio_median_ms"] is None else f"{s['first_audio_median_ms'] / 1000:.2f}"
        worst = "never" if s["first_audio_worst_ms"] is None else f"{s['first_audio_worst_ms'] / 1000:.2f}"
        ratio = "-" if s["worst_over_single_median"] is None else f"{s['worst_over_single_median']:.2f}x"
        fps = "-" if s["fps_min"] is None else f"{s['fps_min']:.0f}"
        gap = "-" if s.get("longest_gap_ms") is None else f"{s['longest_gap_ms']:.0f}"
        rows.append((label, str(s["rounds"]), f"{median} / {worst}", ratio, fps, str(s["secs_below_20fps"]), gap))
    return _aligned(rows)


def _print_level(lv: Level) -> None:
    for r in lv.results:
        print(f"level {lv.label}: client {r.client}: first audio {_seconds(r.first_audio_ms, lv.timeout_s)} s "
              f"(gateway {r.gateway_first_audio_ms} ms), answered {r.answered}, fps min {r.fps_min}, "
              f"{r.secs_below_20fps} s below {SLOW_FPS:.0f} fps, heard {r.heard!r}", flush=True)
    if lv.cores_after_speech is not None:
        print(f"level {lv.label}: cores used in the {CPU_WINDOW_S:.0f} s after the question: {lv.cores_after_speech}",
              flush=True)
    if lv.ws_only_events is not None:
        print(f"level {lv.label}: the WS-only client got {lv.ws_only_events}", flush=True)


def run(levels: list[tuple[int, bool]], out_dir: Path, timeout_s: float, base_url: str | None = None,
        argv: list[str] | None = None, rounds: int = 1) -> dict:
    proc = None
    if base_url is None:
        proc = AvatarProcess()
        proc.wait_ready()
        base_url = proc.url
    measured: list[Level] = []
    try:
        for i, (clients, ws_only) in enumerate(levels * rounds):
            if i:
                time.sleep(3.0)  # the closed sessions' answers drain out of the pipeline
            level = asyncio.run(measure_level(base_url, clients, ws_only, timeout_s,
                                              avatar_pid=None if proc is None else proc.proc.pid))
            measured.append(level)
            _print_level(level)
    finally:
        if proc is not None:
            proc.stop()
            # The services' per-turn log lines (stage timings, first avatar audio) for each client.
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "avatar.log").write_text("\n".join(proc.lines) + "\n")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    report = {
        "benchmark": "concurrency",
        "command": "python -m bench.bench_concurrency " + " ".join(argv or []),
        "commit": commit,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hardware": hardware(),
        "python": platform.python_version(),
        "question": QUESTION,
        "method": __doc__.strip().splitlines()[0],
        "rounds": rounds,
        "levels": [asdict(lv) | {"label": lv.label} for lv in measured],
        "table": table(measured).splitlines(),
        "summary": summarize(measured),
    }
    report["summary_table"] = summary_table(report["summary"]).splitlines()
    out = write_json(out_dir / "concurrency.json", report)
    print(table(measured))
    print()
    print(summary_table(report["summary"]))
    print(f"hardware: {report['hardware']['cpu']} ({report['hardware']['cores']} cores); wrote {out}")
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.bench_concurrency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 2, 3],
                        help="levels: how many WebRTC clients ask at once (default 1 2 3)")
    parser.add_argument("--ws-only", type=int, nargs="*", default=None, metavar="N",
                        help="also run N WebRTC clients plus one WS-only typed client (N defaults to 1)")
    parser.add_argument("--timeout-s", type=float, default=45.0,
                        help="how long after the end of speech to wait for the answers (default 45)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the whole list of levels this many times, interleaved (default 1)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--url", default=None, help="use an avatar that is already running (loopback)")
    args = parser.parse_args(argv)
    levels = [(n, False) for n in args.clients]
    if args.ws_only is not None:
        levels += [(n, True) for n in (args.ws_only or [1])]
    for n, ws_only in levels:
        if not 1 <= n + ws_only <= MAX_CLIENTS:
            parser.error(f"each level needs 1..{MAX_CLIENTS} clients")
    if args.url is not None and not is_loopback_url(args.url):
        parser.error("--url must be a loopback address")
    if not 1 <= args.timeout_s <= 300:
        parser.error("--timeout-s must be between 1 and 300")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be between 1 and 20")
    run(levels, args.out, args.timeout_s, args.url, argv, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
