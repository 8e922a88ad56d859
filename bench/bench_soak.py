"""Soak: sessions talk for many minutes; memory, video and audio smoothness and errors over the run.

Starts ``python main.py`` (embedded default, offline). Then ``--sessions`` WebRTC clients (aiortc,
tests/rtc_client.py) each hold one call for ``--minutes`` and talk in a loop: a spoken question
(Piper speech into the microphone track, so the ASR is in the loop) and a typed one in turn;
each waits until the answer has played to its end, pauses, and asks the next.

It reports:

- the resident memory (VmRSS, from /proc) of main.py and of every service at the start (all
  ready, before any session) and at the end, and samples in between, so a leak shows as growth;
- per session: questions asked, heard, answered; received video fps (mean, and the lowest
  whole second), freezes (a gap of more than 250 ms between received video frames, or audio
  frames), the page's error events by code;
- from the pipeline's log: restarts (a service that exited or sent no heartbeat) and errors.

The clients decode video on the same CPUs as the avatar, so on a small machine fps is a floor.
Not run in CI: ``python -m bench.bench_soak --minutes 30 --sessions 2 --out bench-results``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from bench.avatar_process import ROOT, AvatarProcess
from bench.hardware import hardware
from bench.result_file import write_json
from bench.webrtc_clients import connect_clients, speech_48k

QUESTIONS = (
    "Hello there. What is your name?",
    "What is the weather like today?",
    "Tell me about the sea.",
    "What do you like to eat?",
)
FREEZE_GAP_S = 0.25  # six frames missing at 25 fps: a person sees it stop
HEARD_TIMEOUT_S = 20.0  # after the question ends, for the user's final transcript
ANSWER_TIMEOUT_S = 90.0  # for the answer to play to its end
PAUSE_S = 2.0  # between an answer and the next question, as a person would
WARM_UP_S = 2.0  # after connecting: the first frames of a call do not count towards fps
SLOW_FPS = 20.0


# --- memory, from /proc ------------------------------------------------------------------------


def _rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _service_name(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    for arg in argv:
        if arg.startswith("services."):
            return arg.removeprefix("services.")
    return None


def process_rss_kib(main_pid: int) -> dict[str, int]:
    """VmRSS of main.py and of each service it runs, by name (pids change on a restart)."""
    rss = {"main": _rss_kib(main_pid) or 0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                # The command name (field 2) may hold spaces; the parent pid follows its ")".
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == main_pid:
            name = _service_name(int(entry))
            value = _rss_kib(int(entry))
            if name is not None and value is not None:
                rss[name] = value
    return rss


async def sample_memory(main_pid: int, every_s: float, started: float, samples: list[dict]) -> None:
    while True:
        await asyncio.sleep(every_s)
        samples.append({"t_s": round(time.monotonic() - started, 1), "rss_kib": process_rss_kib(main_pid)})


async def late_frames(base_url: str) -> float:
    """Frames the gateway's tracks skipped because they fell behind (server side, not client)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url + "/metrics") as resp:
            text = await resp.text()
    m = re.search(r'^avatar_frames_total\{kind="late"\} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


# --- sessions ------------------------------------------------------------------------------------


def soak_client_class():  # noqa: ANN201 (a class built on the test client)
    """tests/rtc_client.RtcClient that keeps only when each frame arrived (and audio peaks).

    The base client keeps the last 400 decoded frames for tests to look at: for a long run that
    is memory this process does not need.
    """
    from tests.rtc_client import RtcClient

    class SoakClient(RtcClient):
        def __init__(self, base_url: str) -> None:
            super().__init__(base_url)
            self.audio_times: list[float] = []

        async def _consume(self, track) -> None:  # noqa: ANN001
            while True:
                await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    self.video_times.append(now)
                else:
                    self.audio_times.append(now)

    return SoakClient


@dataclass
class SessionResult:
    session: int
    asked: int = 0
    heard: int = 0  # the user's final transcript came, with words
    answered: int = 0  # the answer played to its end
    first_audio_ms: list[float] = field(default_factory=list)  # the gateway's per-turn figure
    errors: dict[str, int] = field(default_factory=dict)
    fps_mean: float | None = None
    fps_min_second: float | None = None
    secs_below_20fps: int = 0
    video_freezes: int = 0
    longest_video_gap_ms: float | None = None
    audio_freezes: int = 0
    # (seconds into the run, gap ms) of each video freeze: compare with the load and the log.
    video_freeze_at: list[tuple[float, float]] = field(default_factory=list)


def _is_user_final(turn_after: int):  # noqa: ANN202
    return lambda e: (e.get("type") == "transcript" and e.get("role") == "user" and e.get("final")
                      and e.get("turn", 0) > turn_after)


def _is_answer_end(turn: int):  # noqa: ANN202
    return lambda e: (e.get("type") == "transcript" and e.get("role") == "avatar" and e.get("final")
                      and e.get("turn") == turn)


async def talk(client, index: int, speech: dict[str, np.ndarray], deadline: float,  # noqa: ANN001
               result: SessionResult) -> None:
    """Ask, wait for the whole answer, pause; until the deadline. Spoken and typed in turn."""
    last_turn, n = 0, 0
    while time.monotonic() < deadline:
        question = QUESTIONS[(n + index) % len(QUESTIONS)]
        spoken = n % 2 == 0
        n += 1
        result.asked += 1
        if spoken:
            client.mic.play(speech[question])
            wait_s = len(speech[question]) / 48000 + HEARD_TIMEOUT_S
        else:
            await client.send({"type": "text", "text": question})
            wait_s = HEARD_TIMEOUT_S
        try:
            heard = await client.wait_event(_is_user_final(last_turn), wait_s)
        except TimeoutError:
            continue
        last_turn = heard["turn"]
        # A spoken question is answered in a later turn than its line (speculative end of turn).
        answer_turn = heard.get("answer_turn", last_turn)
        if not heard["text"].strip():
            continue  # the ASR heard no words: nothing is asked
        result.heard += 1
        try:
            await client.wait_event(_is_answer_end(answer_turn), ANSWER_TIMEOUT_S)
            result.answered += 1
        except TimeoutError:
            await client.send({"type": "interrupt"})
        stats = next((e for e in reversed(client.events)
                      if e.get("type") == "stats" and e.get("turn") == answer_turn), None)
        if stats and stats.get("stages", {}).get("first_audio_ms"):
            result.first_audio_ms.append(stats["stages"]["first_audio_ms"])
        await asyncio.sleep(PAUSE_S)


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


def smoothness(result: SessionResult, video: list[float], audio: list[float], start: float, end: float) -> None:
    video = [t for t in video if start <= t < end]
    audio = [t for t in audio if start <= t < end]
    seconds = int(end - start)
    if seconds <= 0:
        return
    per_second = [0] * seconds
    for t in video:
        k = int(t - start)
        if k < seconds:
            per_second[k] += 1
    result.fps_mean = round(len(video) / (end - start), 1)
    result.fps_min_second = float(min(per_second))
    result.secs_below_20fps = sum(1 for f in per_second if f < SLOW_FPS)
    video_gaps, audio_gaps = _gaps(video), _gaps(audio)
    result.video_freezes = sum(1 for g in video_gaps if g > FREEZE_GAP_S)
    result.video_freeze_at = [
        (round(t - start, 1), round(g * 1000, 1)) for t, g in zip(video, video_gaps) if g > FREEZE_GAP_S
    ]
    result.longest_video_gap_ms = round(max(video_gaps) * 1000, 1) if video_gaps else None
    result.audio_freezes = sum(1 for g in audio_gaps if g > FREEZE_GAP_S)


async def soak(base_url: str, main_pid: int, sessions: int, minutes: float) -> dict:
    speech = {q: speech_48k(q) for q in QUESTIONS}
    client_class = soak_client_class()
    samples: list[dict] = []
    rss_start = process_rss_kib(main_pid)
    load_start = os.getloadavg()
    started = time.monotonic()
    sampler = asyncio.create_task(
        sample_memory(main_pid, max(10.0, minutes * 60 / 30), started, samples), name="soak-memory"
    )
    try:
        async with AsyncExitStack() as stack:
            clients = await connect_clients(stack, base_url, sessions, client_class)
            await asyncio.sleep(WARM_UP_S)
            late_start = await late_frames(base_url)
            talk_start = time.monotonic()
            deadline = talk_start + minutes * 60
            results = [SessionResult(i) for i in range(sessions)]
            talkers = [asyncio.create_task(talk(c, i, speech, deadline, r), name=f"soak-talk-{i}")
                       for i, (c, r) in enumerate(zip(clients, results))]
            await asyncio.gather(*talkers)
            talk_end = time.monotonic()
            late = await late_frames(base_url) - late_start
            for c, r in zip(clients, results):
                smoothness(r, c.video_times, c.audio_times, talk_start, talk_end)
                r.errors = dict(collections.Counter(e.get("code", "?") for e in c.events if e.get("type") == "error"))
            rss_end = process_rss_kib(main_pid)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    warm = warm_sample(samples, minutes)
    return {
        "talked_s": round(talk_end - talk_start, 1),
        # A shared machine's other work shows up as freezes: the 1-minute load average.
        "load_average": {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)},
        "gateway_late_frames": late,
        "rss_kib": {
            "start": rss_start, "end": rss_end,
            "growth": {k: rss_end.get(k, 0) - v for k, v in rss_start.items()},
            # The first minute loads lazy parts and fills caches; a leak is what grows after.
            "warm_at_s": warm["t_s"] if warm else None,
            "growth_after_warm_up": {k: rss_end.get(k, 0) - v for k, v in warm["rss_kib"].items()} if warm else None,
        },
        "rss_samples": samples,
        "sessions": [asdict(r) for r in results],
    }


def warm_sample(samples: list[dict], minutes: float) -> dict | None:
    """The first memory sample after the warm-up (a minute, or a quarter of a short run)."""
    warm_s = min(60.0, minutes * 60 / 4)
    return next((s for s in samples if s["t_s"] >= warm_s), None)


def log_counts(lines: list[str]) -> dict[str, int]:
    return {
        "restarts": sum(1 for line in lines if "exited with code" in line or "sent no heartbeat" in line),
        "error_lines": sum(1 for line in lines if " ERROR " in line),
        "tracebacks": sum(1 for line in lines if line.startswith("Traceback")),
    }


def summary(report: dict) -> str:
    rss = report["rss_kib"]
    after = rss.get("growth_after_warm_up") or {}
    out = [f"process  RSS start (MiB)  RSS end (MiB)  growth (MiB)  after {rss.get('warm_at_s')} s (MiB)"]
    for name, start in rss["start"].items():
        end = rss["end"].get(name, 0)
        later = f"{after[name] / 1024:+.1f}" if name in after else "-"
        out.append(f"{name:8s} {start / 1024:15.1f} {end / 1024:14.1f} {(end - start) / 1024:+13.1f} {later:>16s}")
    for s in report["sessions"]:
        med = statistics.median(s["first_audio_ms"]) if s["first_audio_ms"] else None
        out.append(
            f"session {s['session']}: asked {s['asked']}, heard {s['heard']}, answered {s['answered']}; "
            f"fps mean {s['fps_mean']}, lowest second {s['fps_min_second']}, {s['secs_below_20fps']} s below "
            f"{SLOW_FPS:.0f}; video freezes {s['video_freezes']} (longest gap {s['longest_video_gap_ms']} ms), "
            f"audio freezes {s['audio_freezes']}; first audio median "
            f"{'-' if med is None else f'{med:.0f} ms'}; errors {s['errors'] or 'none'}"
        )
    out.append(f"gateway late (skipped) frames: {report['gateway_late_frames']:.0f}; pipeline log: {report['log']}; "
               f"load average {report['load_average']}")
    return "\n".join(out)


def run(minutes: float, sessions: int, out_dir: Path, argv: list[str]) -> dict:
    proc = AvatarProcess()
    try:
        proc.wait_ready()
        measured = asyncio.run(soak(proc.url, proc.proc.pid, sessions, minutes))
    finally:
        proc.stop()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    report = {
        "benchmark": "soak",
        "command": "python -m bench.bench_soak " + " ".join(argv),
        "commit": commit,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hardware": hardware(),
        "python": platform.python_version(),
        "minutes": minutes,
        "method": __doc__.strip().splitlines()[0],
        "freeze_gap_ms": FREEZE_GAP_S * 1000,
        **measured,
        "log": log_counts(proc.lines),
    }
    out = write_json(out_dir / "soak.json", report)
    print(summary(report))
    print(f"hardware: {report['hardware']['cpu']} ({report['hardware']['cores']} cores); wrote {out}")
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.bench_soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the sessions talk (default 30)")
    parser.add_argument("--sessions", type=int, default=2, help="WebRTC sessions talking at once (default 2)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60:
        parser.error("--minutes must be between 0 and 1440")
    if not 1 <= args.sessions <= 8:
        parser.error("--sessions must be between 1 and 8")
    run(args.minutes, args.sessions, args.out, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
