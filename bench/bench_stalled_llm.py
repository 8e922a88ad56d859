"""Spoken questions while the LLM is not there: does anything of the other sessions wait?

    python -m bench.bench_stalled_llm [--clients 3] [--rounds 10] [--json docs/bench/stalled-llm.json]
        [--logs DIR]

Two runs on the real services (``bench/service_stack.py``: the five processes, without the
supervisor). In each, ``--clients`` aiortc clients ask a spoken question at once, ``--rounds``
times (30 questions by default). Every other round, each client first has the avatar speak a
sentence (``say``: the TTS, no LLM) and speaks its question over it, a barge-in.

- **up**: all five services are running;
- **down**: the LLM is not started (as under compose, where the gateway starts while a large
  model loads); once every question was asked, it is started, and each session must get one
  answer, to its latest question.

Printed and written to JSON, per run, each event kind timed from the speech itself to its
arrival at the page (goal: with the LLM down, within 100 ms of the LLM-up figure):
- **onset**: the page's ``speech`` event, from the first sample of the question leaving the
  client's microphone (the VAD's onset window + the hops);
- **transcript**: the user's final transcript, from the last sample of the question leaving
  the microphone (endpoint silence + decode + every hop);
- **barge-in**: the page's ``interrupted`` event when the question starts over the avatar's
  voice, from the first sample of the question;
- **loop lag**: the round trip of a WebSocket ping to the gateway every 100 ms (its event loop
  answers it), median and max;
- **down only**: the page's "waiting" notices, and from the LLM's "ready" line to each session's
  first answer audio, with how many answers each session got.

``--logs DIR`` keeps every service's whole log (``DIR/<run>-<service>.log``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field

from bench.bench_concurrency import timed_mic_class
from bench.result_file import write_json
from bench.service_stack import ServiceStack
from bench.webrtc_clients import connect_clients, speech_48k


QUESTIONS = (
    "Hello there. What is your name?",
    "What is the capital of France?",
    "Can you tell me a short story?",
)
# Said by the avatar before a barge-in round's question (long enough to be talking over).
SAID = "Let me tell you a little about the weather today. It is sunny and warm, with a light breeze."
PING_EVERY_S = 0.1
ROUND_TIMEOUT_S = 20.0
SAY_TIMEOUT_S = 15.0
ANSWER_TIMEOUT_S = 60.0
KINDS = ("onset", "transcript", "barge_in")


@dataclass
class Run:
    llm: str  # "up" or "down"
    clients: int
    rounds: int
    event_delay_ms: list[float] = field(default_factory=list)  # the transcripts' (as before)
    onset_delay_ms: list[float] = field(default_factory=list)
    barge_in_delay_ms: list[float] = field(default_factory=list)
    missing_transcripts: int = 0
    missing_onsets: int = 0
    missing_barge_ins: int = 0
    ping_rtt_ms: list[float] = field(default_factory=list)
    waiting_notices: list[str] = field(default_factory=list)
    # down only: seconds from the LLM's ready line to each session's first answer audio, and
    # how many answers (avatar final transcripts) each session got after it came back.
    answer_after_llm_ready_s: list[float | None] = field(default_factory=list)
    answers_per_session: list[int] = field(default_factory=list)
    answered_latest: list[bool] = field(default_factory=list)
    # (round, client) of each question whose transcript never came, and the services' last log
    # lines when anything went missing (to see why).
    missed: list[tuple[int, int]] = field(default_factory=list)
    log_tails: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        def stats(xs: list[float]) -> dict:
            if not xs:
                return {"n": 0}
            ordered = sorted(xs)
            return {"n": len(xs), "median": round(statistics.median(xs), 1),
                    "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
                    "max": round(max(xs), 1)}

        return {"llm": self.llm, "event_delay_ms": stats(self.event_delay_ms),
                "delay_ms": {"onset": stats(self.onset_delay_ms), "transcript": stats(self.event_delay_ms),
                             "barge_in": stats(self.barge_in_delay_ms)},
                "missing": {"onset": self.missing_onsets, "transcript": self.missing_transcripts,
                            "barge_in": self.missing_barge_ins},
                "missing_transcripts": self.missing_transcripts, "loop_lag_ms": stats(self.ping_rtt_ms),
                "waiting_notices": sorted(set(self.waiting_notices)),
                "answer_after_llm_ready_s": self.answer_after_llm_ready_s,
                "answers_per_session": self.answers_per_session, "answered_latest": self.answered_latest}


def _user_final(e: dict) -> bool:
    return e.get("type") == "transcript" and e.get("role") == "user" and bool(e.get("final")) and bool(e.get("text"))


async def _pinger(client, rtts: list[float]) -> None:  # noqa: ANN001
    """Ping the gateway every PING_EVERY_S; each pong carries back its ping's send time."""
    seen = 0
    while True:
        await client.send({"type": "ping", "t": time.monotonic() * 1000})
        await asyncio.sleep(PING_EVERY_S)  # the sampling period, not a wait for something
        for arrived, e in zip(client.arrivals[seen:], client.events[seen:]):
            if e.get("type") == "pong":
                rtts.append(round(arrived * 1000 - e["t"], 1))
        seen = len(client.events)


async def ask_rounds(stack: ServiceStack, run: Run, llm_down: bool) -> None:
    """Connect the clients, ask ``run.rounds`` rounds of spoken questions; with ``llm_down``,
    then start the LLM and wait for each session's answer."""
    clips = [speech_48k(q) for q in QUESTIONS]
    mic_class = timed_mic_class()
    async with AsyncExitStack() as exits:
        clients = await connect_clients(exits, stack.url, run.clients, mic_class=mic_class)
        await asyncio.sleep(1.0)  # idle video flowing before the first question
        pinger = asyncio.create_task(_pinger(clients[0], run.ping_rtt_ms), name="bench-pinger")
        try:
            for r in range(run.rounds):
                await _round(clients, clips, r, run)
                await asyncio.sleep(0.5)
        finally:
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
        for c in clients:
            run.waiting_notices += [e["message"] for e in c.events if e.get("type") == "waiting" and e["message"]]
        if not llm_down:
            return
        latest = [_latest_answer_turn(c) for c in clients]
        marks = [len(c.events) for c in clients]
        stack.start("llm")
        ready_at = await asyncio.to_thread(stack.wait_ready, "llm")
        answer_deadline = time.monotonic() + ANSWER_TIMEOUT_S
        for c, mark in zip(clients, marks):
            try:
                speaking = await c.wait_event(_speaking, max(0.1, answer_deadline - time.monotonic()), start=mark)
                run.answer_after_llm_ready_s.append(round(_arrival(c, speaking) - ready_at, 2))
            except TimeoutError:
                run.answer_after_llm_ready_s.append(None)
        await asyncio.sleep(5.0)  # room for a second (wrong) answer to show up
        for c, mark, turn in zip(clients, marks, latest):
            answered = {e["turn"] for e in c.events[mark:]
                        if e.get("type") == "transcript" and e.get("role") == "avatar" and e.get("text")}
            run.answers_per_session.append(len(answered))
            run.answered_latest.append(answered == {turn})


async def _round(clients: list, clips: list, r: int, run: Run) -> None:
    """Round ``r``: each client asks at once (over the avatar's voice in odd rounds); the delay
    of each event kind is noted, or its absence."""
    barge_in = r % 2 == 1
    if barge_in:
        said = [len(c.events) for c in clients]
        for c in clients:
            await c.send({"type": "say", "text": SAID})
        say_deadline = time.monotonic() + SAY_TIMEOUT_S
        for c, mark in zip(clients, said):
            try:
                await c.wait_event(_speaking, max(0.1, say_deadline - time.monotonic()), start=mark)
            except TimeoutError:
                pass  # no voice to talk over: the barge-in below is missed, and counted so
    marks = [len(c.events) for c in clients]
    for i, c in enumerate(clients):
        c.mic.play(clips[(r + i) % len(clips)])
    round_deadline = time.monotonic() + ROUND_TIMEOUT_S
    for i, (c, mark) in enumerate(zip(clients, marks)):
        kinds = [("transcript", _user_final), ("onset", _onset)] + ([("barge_in", _barged_in)] if barge_in else [])
        for kind, pred in kinds:
            try:
                event = await c.wait_event(pred, max(0.1, round_deadline - time.monotonic()), start=mark)
            except TimeoutError:
                if kind == "transcript":
                    run.missing_transcripts += 1
                    run.missed.append((r, i))
                elif kind == "onset":
                    run.missing_onsets += 1
                else:
                    run.missing_barge_ins += 1
                continue
            arrived = _arrival(c, event)
            if kind == "transcript" and c.mic.clip_ended_at is not None:
                run.event_delay_ms.append(round((arrived - c.mic.clip_ended_at) * 1000, 1))
            elif kind != "transcript" and c.mic.clip_started_at is not None:
                delays = run.onset_delay_ms if kind == "onset" else run.barge_in_delay_ms
                delays.append(round((arrived - c.mic.clip_started_at) * 1000, 1))


def _speaking(e: dict) -> bool:
    return e.get("type") == "state" and e.get("state") == "speaking"


def _onset(e: dict) -> bool:
    return e.get("type") == "speech"


def _barged_in(e: dict) -> bool:
    return e.get("type") == "interrupted"


def _arrival(client, event: dict) -> float:  # noqa: ANN001
    """When ``event`` reached the client (monotonic); RtcClient keeps arrival times per event."""
    return client.arrivals[next(i for i, e in enumerate(client.events) if e is event)]


def _latest_answer_turn(client) -> int | None:  # noqa: ANN001
    finals = [e for e in client.events if _user_final(e) and "answer_turn" in e]
    return finals[-1]["answer_turn"] if finals else None


async def measure(llm_down: bool, clients: int, rounds: int, logs: str = "") -> Run:
    run = Run("down" if llm_down else "up", clients, rounds)
    with ServiceStack() as stack:
        names = ("gateway", "asr", "tts", "lipsync") if llm_down else ("gateway", "asr", "llm", "tts", "lipsync")
        stack.start(*names)
        await asyncio.to_thread(stack.wait_ready, *names)
        try:
            await ask_rounds(stack, run, llm_down)
        finally:
            if run.missing_transcripts or None in run.answer_after_llm_ready_s or not all(run.answered_latest):
                run.log_tails = {name: stack.log_tail(name, 150) for name in stack.services}
            if logs:
                _write_logs(stack, logs, run.llm)
    return run


def _write_logs(stack: ServiceStack, folder: str, label: str) -> None:
    """Every service's whole log, one file each (``--logs``): to see why an answer went missing."""
    os.makedirs(folder, exist_ok=True)
    for name, service in stack.services.items():
        with open(os.path.join(folder, f"{label}-{name}.log"), "w", encoding="utf-8") as f:
            f.write("\n".join(service.lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", choices=("up", "down"), default=None, help="one of the two runs")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--logs", default="", help="write every service's whole log into this folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    modes = {"up": (False,), "down": (True,), None: (False, True)}[args.only]
    runs = [asyncio.run(measure(down, args.clients, args.rounds, args.logs)) for down in modes]
    for run in runs:
        s = run.summary()
        print(f"LLM {run.llm:4s}: loop lag ms {s['loop_lag_ms']}  missing {s['missing']}")
        for kind in KINDS:
            print(f"  {kind:10s} delay ms {s['delay_ms'][kind]}")
    if args.json:
        write_json(args.json, {"clients": args.clients, "rounds": args.rounds, "runs": [asdict(r) for r in runs],
                               "summary": [r.summary() for r in runs]}, indent=1)
    down = [r for r in runs if r.llm == "down"]
    if down:
        d = down[0].summary()
        print(f"LLM down: notices {d['waiting_notices']}; after the LLM was ready, first answer audio in "
              f"{d['answer_after_llm_ready_s']} s; answers per session {d['answers_per_session']}; "
              f"each to its latest question: {d['answered_latest']}")
    if len(runs) == 2:
        up, d = runs[0].summary()["delay_ms"], runs[1].summary()["delay_ms"]
        for kind in KINDS:
            if up[kind]["n"] and d[kind]["n"]:
                print(f"{kind:10s} LLM down minus up: median {d[kind]['median'] - up[kind]['median']:+.0f} ms, "
                      f"p95 {d[kind]['p95'] - up[kind]['p95']:+.0f} ms (goal: within 100 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
