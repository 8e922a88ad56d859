"""Faults, with real processes: main.py's supervisor, the real embedded pipeline, and a WebSocket
client that types its questions (as the page does without a call).

Each stage (llm, tts, lipsync) is SIGKILLed mid-answer, and the llm is also SIGSTOPped (a hang:
only the missing heartbeat shows it). Each time the supervisor restarts the service, the page is
told, and the next question on the *same* WebSocket is answered within seconds of the restart.
Typed questions never reach the asr, so the asr case uses a real call (aiortc) and speaks its
next question. Then the gateway itself is killed between answers: the supervisor restarts it,
and a new WebSocket that presents the conversation id is answered and continues the conversation.

One pipeline and one client serve every case (module scope, one event loop), in file order:
the gateway case comes last because it ends the client's WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import time

import aiohttp
import numpy as np
import psutil
import pytest
import pytest_asyncio

from bench.avatar_process import AvatarProcess
from tests.rtc_client import RtcClient

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

logger = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT_S = 5.0
ANSWERED_WITHIN_S = 10.0  # after the restarted service is ready again
RELOAD_WITHIN_S = 120.0  # a restart reloads models; generous for a busy 2-core machine
# With a call, the answer plays in real time: its end comes a spoken answer's length later.
PLAYED_WITHIN_S = 40.0
TYPED_STAGES = ("llm", "tts", "lipsync")
SPOKEN_QUESTION = "Hello there. What is your name?"


class TypedClient:
    """The page's WebSocket protocol, typed questions only (no call, so answers come as text)."""

    def __init__(self, base_url: str, conversation: str = "") -> None:
        self.base_url = base_url
        self.events: list[dict] = []
        self.questions: list[str] = []
        self._conversation = conversation
        self._changed = asyncio.Event()

    async def __aenter__(self) -> "TypedClient":
        self._http = aiohttp.ClientSession()
        self.ws = await self._http.ws_connect(self.base_url.replace("http", "ws") + "/ws")
        self._reader = asyncio.create_task(self._read(), name="test-ws-reader")
        await self.ws.send_json({"type": "hello", "version": 1, "conversation": self._conversation})
        config = await self.wait(lambda e: e["type"] == "config", 30)
        self.session = config["session"]
        self.conversation = config.get("conversation", "")
        self.history = config.get("history", [])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.ws.close()
        await self._http.close()

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(msg.data))
                self._changed.set()
        self._changed.set()  # closed: wake any waiter

    async def wait(self, pred, timeout_s: float, start: int = 0) -> dict:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        seen = start
        while True:
            for event in self.events[seen:]:
                if pred(event):
                    return event
            seen = len(self.events)
            if self._reader.done():
                raise ConnectionError(f"the WebSocket closed; last events {self.events[-10:]}")
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"event not seen in {timeout_s:.0f} s; last events {self.events[-10:]}")
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def ask(self, text: str) -> int:
        """Type a question; its turn (the gateway echoes it as the user's final transcript)."""
        mark = len(self.events)
        self.questions.append(text)
        await self.ws.send_json({"type": "text", "text": text})
        echo = await self.wait(
            lambda e: e["type"] == "transcript" and e["role"] == "user" and e["final"] and e["text"] == text,
            30, start=mark,
        )
        return echo["turn"]

    async def first_words(self, turn: int, timeout_s: float) -> str:
        event = await self.wait(
            lambda e: e["type"] == "transcript" and e["role"] == "avatar" and e["turn"] == turn and e["text"],
            timeout_s,
        )
        return event["text"]

    async def answer(self, turn: int, timeout_s: float) -> str:
        """The whole answer of ``turn``, once its final transcript arrives."""
        await self.wait(
            lambda e: e["type"] == "transcript" and e["role"] == "avatar" and e["turn"] == turn and e["final"],
            timeout_s,
        )
        return " ".join(
            e["text"] for e in self.events
            if e["type"] == "transcript" and e["role"] == "avatar" and e["turn"] == turn and e["text"]
        )

    async def closed(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self._reader)


def service_pid(avatar: AvatarProcess, service: str) -> int:
    procs = [
        p for p in psutil.Process(avatar.proc.pid).children()
        if f"services.{service}" in p.cmdline()
    ]
    assert len(procs) == 1, procs
    return procs[0].pid


async def log_line(avatar: AvatarProcess, needle: str, timeout_s: float, start: int) -> str:
    """The first log line from ``start`` on that contains ``needle`` (the log is read by a thread)."""
    deadline = time.monotonic() + timeout_s
    seen = start
    while time.monotonic() < deadline:
        for line in avatar.lines[seen:]:
            if needle in line:
                return line
        seen = len(avatar.lines)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no log line with {needle!r} in {timeout_s:.0f} s:\n{avatar.log_tail(40)}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    db = tmp_path_factory.mktemp("faults") / "conversations.sqlite3"
    proc = AvatarProcess(env={
        "AVATAR_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
        # Short answers: this is about recovery, not prose, and a final must come in seconds
        # even on a loaded machine.
        "AVATAR_LLM_MAX_NEW_TOKENS": "24",
        # One client asks more questions than the default per-minute limit allows a person.
        "AVATAR_TEXT_BURST": "50",
        "AVATAR_TEXT_PER_MIN": "600",
        "AVATAR_CONVERSATIONS_DB": str(db),
    })
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        # No false alarm: only the services these tests broke were ever declared hung.
        hung = [line for line in proc.lines if "sent no heartbeat" in line]
        assert all(" llm sent no heartbeat" in line for line in hung), hung


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(pipeline):
    async with TypedClient(pipeline.url) as c:
        turn = await c.ask("Hello! Who are you?")
        await c.answer(turn, 120)  # warm: the first answer also loads lazy parts
        yield c


@pytest.fixture(scope="module")
def after_restart() -> dict[str, dict]:
    """What each restart case saw, for the history checks that follow it."""
    return {}


async def _answered_soon_after(avatar: AvatarProcess, client: TypedClient, service: str, mark: int,
                               question: str) -> dict:
    """Wait until ``service`` is ready again, ask ``question``, and time its whole answer."""
    await log_line(avatar, f"{service} is ready", RELOAD_WITHIN_S, mark)
    ready_at = time.monotonic()
    earlier = list(client.questions)
    turn = await client.ask(question)
    try:
        answer = await client.answer(turn, ANSWERED_WITHIN_S - (time.monotonic() - ready_at))
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n--- the pipeline's log ---\n{avatar.log_tail(60)}") from None
    took_s = time.monotonic() - ready_at
    logger.info("%s restarted: next question answered %.1f s after it was ready: %r", service, took_s, answer)
    return {"turn": turn, "answered_s": took_s, "earlier": earlier, "answer": answer}


@pytest.mark.parametrize("service", TYPED_STAGES)
async def test_a_stage_killed_mid_answer_is_restarted_and_the_next_question_answered(
    pipeline, client, after_restart, service
):
    old = service_pid(pipeline, service)
    mark, events_mark = len(pipeline.lines), len(client.events)
    turn = await client.ask("Tell me a long story about the sea.")
    await client.first_words(turn, 60)  # mid-answer: it has started and is still going
    os.kill(old, signal.SIGKILL)
    await log_line(pipeline, f"{service} exited with code -9", 20, mark)
    seen = await _answered_soon_after(pipeline, client, service, mark, f"After the {service} restart: what is the sea?")
    after_restart[service] = seen
    # The page was told, and it is still the same session on the same WebSocket.
    await client.wait(
        lambda e: e["type"] == "error" and e["code"] == "service_restarted" and service in e["message"],
        5, start=events_mark,
    )
    assert not client.ws.closed
    assert service_pid(pipeline, service) != old and gone(old)


def speech_48k(text: str) -> np.ndarray:
    """Test speech (Piper, 16 kHz) at the WebRTC microphone's 48 kHz."""
    from scipy.signal import resample_poly

    from tests.speech import piper_speech

    pcm = resample_poly(piper_speech(text).astype(np.float32), 3, 1)
    return np.clip(pcm, -32768, 32767).astype(np.int16)


def _said(e: dict, role: str, turn_after: int) -> bool:
    return e["type"] == "transcript" and e["role"] == role and e.get("turn", 0) > turn_after


async def test_a_killed_asr_is_restarted_and_hears_the_next_spoken_question(pipeline):
    speech = speech_48k(SPOKEN_QUESTION)
    async with RtcClient(pipeline.url) as call:
        await call.wait_event(lambda e: e["type"] == "webrtc" and e["state"] == "connected", 30)
        await call.send({"type": "text", "text": "Tell me a long story about the sea."})
        first = await call.wait_event(lambda e: _said(e, "avatar", 0) and e["text"], 60)
        old = service_pid(pipeline, "asr")
        mark, events_mark = len(pipeline.lines), len(call.events)
        os.kill(old, signal.SIGKILL)  # mid-answer: the avatar is speaking
        await log_line(pipeline, "asr exited with code -9", 20, mark)
        await log_line(pipeline, "asr is ready", RELOAD_WITHIN_S, mark)
        ready_at = time.monotonic()
        await call.send({"type": "interrupt"})  # the Stop button: no barge-in over the avatar's voice
        call.mic.play(speech)
        try:
            heard = await call.wait_event(
                lambda e: _said(e, "user", first["turn"]) and e["final"] and e["text"], ANSWERED_WITHIN_S
            )
            words_s = time.monotonic() - ready_at
            # The answer's turn is the utterance's, or later: a speculative answer (started at a
            # pause) takes a turn of its own while the user's line keeps the utterance's.
            answer = await call.wait_event(
                lambda e: _said(e, "avatar", first["turn"]) and e["turn"] >= heard["turn"] and e["text"],
                ANSWERED_WITHIN_S - words_s,
            )
            await call.wait_event(
                lambda e: _said(e, "avatar", first["turn"]) and e["turn"] == answer["turn"] and e["final"],
                PLAYED_WITHIN_S,
            )
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- the pipeline's log ---\n{pipeline.log_tail(60)}") from None
        logger.info(
            "asr restarted: heard %r %.1f s after it was ready, the spoken answer played to its end %.1f s after",
            heard["text"], words_s, time.monotonic() - ready_at,
        )
        assert "name" in heard["text"].lower()
        assert any(e["type"] == "error" and e["code"] == "service_restarted" for e in call.events[events_mark:])
        assert not call.ws.closed
    assert gone(old)


async def test_a_hung_llm_is_killed_restarted_and_the_next_question_answered(pipeline, client, after_restart):
    old = service_pid(pipeline, "llm")
    mark, events_mark = len(pipeline.lines), len(client.events)
    turn = await client.ask("Tell me a long story about a mountain.")
    await client.first_words(turn, 60)
    os.kill(old, signal.SIGSTOP)
    stopped_at = time.monotonic()
    line = await log_line(pipeline, "llm sent no heartbeat for", HEARTBEAT_TIMEOUT_S + 10, mark)
    detected_s = time.monotonic() - stopped_at
    logger.info("hung llm detected %.1f s after SIGSTOP: %s", detected_s, line)
    assert re.search(r"llm sent no heartbeat for \d+\.\d s: restarting", line)
    # The last beat came at most a second before the stop; a little slack for the log pipe.
    assert HEARTBEAT_TIMEOUT_S - 1.5 < detected_s < HEARTBEAT_TIMEOUT_S + 4
    seen = await _answered_soon_after(pipeline, client, "llm", mark, "After the hang: what is a mountain?")
    after_restart["llm-hang"] = seen
    await client.wait(lambda e: e["type"] == "error" and e["code"] == "service_restarted", 5, start=events_mark)
    assert not client.ws.closed
    assert gone(old), "a stopped process ignores SIGTERM: the supervisor must SIGKILL it"


async def test_the_conversation_survives_the_stage_restarts(pipeline, client):
    """Every question asked across the restarts is in the gateway's record of the conversation,
    which is what each LLM request's history is built from."""
    async with TypedClient(pipeline.url, conversation=client.conversation) as again:
        said = [h["text"] for h in again.history if h["role"] == "user"]
    assert said == client.questions


async def test_the_llm_request_after_a_restart_carries_the_earlier_exchanges(pipeline, client, after_restart):
    """The llm logs, as it starts each answer, ``Session(<id>) turn <n>: llm request with <k>
    history messages``: the gateway's history was sent and used, and a restarted llm has
    nothing else to go on."""
    seen = after_restart.get("llm")
    assert seen is not None, "run with the llm restart case"
    line = await log_line(pipeline, f"Session({client.session}) turn {seen['turn']}: llm request with", 2, 0)
    messages = int(re.search(r"llm request with (\d+) history messages", line).group(1))
    assert messages >= len(seen["earlier"])  # at least every earlier question (and the answers heard)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway_restart(pipeline, client) -> dict:
    """Kill the gateway between answers, once; what the page's reconnect then finds."""
    old = service_pid(pipeline, "gateway")
    mark = len(pipeline.lines)
    os.kill(old, signal.SIGKILL)
    await client.closed(20)
    await log_line(pipeline, "gateway exited with code -9", 20, mark)
    await log_line(pipeline, "gateway is ready", RELOAD_WITHIN_S, mark)
    ready_at = time.monotonic()
    async with TypedClient(pipeline.url, conversation=client.conversation) as fresh:
        turn = await fresh.ask("After the gateway restart: what is the sky?")
        answer = await fresh.answer(turn, ANSWERED_WITHIN_S - (time.monotonic() - ready_at))
        took_s = time.monotonic() - ready_at
    logger.info("gateway restarted: a new WebSocket was answered %.1f s after it was ready", took_s)
    return {"old": old, "fresh": fresh, "answer": answer, "answered_s": took_s}


async def test_a_killed_gateway_is_restarted_and_a_new_websocket_answered(pipeline, client, gateway_restart):
    fresh = gateway_restart["fresh"]
    assert fresh.session != client.session
    assert gateway_restart["answer"].strip()
    assert gone(gateway_restart["old"])


async def test_the_conversation_survives_a_gateway_restart(client, gateway_restart):
    """The conversation is on disk (the gateway's store); the page reconnects with its id."""
    fresh = gateway_restart["fresh"]
    assert fresh.conversation == client.conversation
    said = [h["text"] for h in fresh.history if h["role"] == "user"]
    assert said == client.questions
