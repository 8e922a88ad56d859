"""The gateway's sends to the ASR and the TTS never wait, and one session's backlog never holds
another's (services/gateway/stage_outbox.py).

Real ZeroMQ sockets on ipc, as the gateway opens them: first the stage is absent (not started,
or restarting), then present but not reading (its queue full), then reading.
"""

import asyncio
import json
import time

import aiohttp
import numpy as np
import pytest

from bench.service_stack import ServiceStack
from services import messages as m
from services.endpoints import Endpoints
from services.gateway.stage_outbox import StageOutbox
from services.transport import Transport

PER_SESSION = 50


def _audio(session: str, n: int) -> m.AudioIn:
    # The chunk's number rides in its samples, to check what arrives and in which order.
    return m.AudioIn(session, 1, np.full(320, n, np.int16), False)


async def _lag_while(work, ticks: list[float]) -> None:
    """Run ``work`` while a 10 ms ticker on the same loop notes how late each tick was."""

    async def tick() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            ticks.append(time.perf_counter() - t - 0.01)

    ticker = asyncio.create_task(tick())
    try:
        await work()
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)


async def _receive_all(inbox, quiet_s: float = 0.5) -> list[m.AudioIn]:
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(inbox.recv(), quiet_s))
        except TimeoutError:
            return got


def _numbers(got: list[m.AudioIn], session: str) -> list[int]:
    return [int(msg.pcm[0]) for msg in got if msg.session == session]


async def test_an_absent_then_full_stage_holds_no_session_and_no_loop(tmp_path):
    gateway = Transport(Endpoints.in_dir(str(tmp_path)))
    closed: set[str] = set()
    outbox = StageOutbox("asr", gateway.push(gateway.endpoints.asr_in), PER_SESSION,
                         stale=lambda msg: msg.session in closed)
    task = asyncio.create_task(outbox.run())
    stage = Transport(Endpoints.in_dir(str(tmp_path)))
    try:
        # Absent: 10 s of one session's microphone and a little of two others' go in without a
        # single wait; "loud" keeps only its latest second, the others keep everything.
        ticks: list[float] = []

        async def absent() -> None:
            for n in range(500):
                outbox.put(_audio("loud", n))
                if n < 20:
                    outbox.put(_audio("quiet", n))
                elif n < 40:  # by now the socket's own queue is full: these wait in the outbox
                    outbox.put(_audio("gone", n))
                await asyncio.sleep(0)
            await asyncio.sleep(0.2)

        started = time.perf_counter()
        await _lag_while(absent, ticks)
        assert time.perf_counter() - started < 2.0
        assert max(ticks) < 0.1, f"the loop waited {max(ticks) * 1000:.0f} ms"
        assert len(outbox.waiting()["loud"]) <= PER_SESSION and outbox.dropped["loud"] >= 500 - PER_SESSION - 20
        closed.add("gone")  # closed while the stage was away: none of it is sent

        # Present but not reading: the socket's queues fill and refuse; puts still never wait.
        inbox = stage.pull(stage.endpoints.asr_in)
        await asyncio.sleep(0.3)
        ticks.clear()

        async def full() -> None:
            for n in range(500, 700):
                outbox.put(_audio("loud", n))
                await asyncio.sleep(0)
            outbox.put(_audio("late", 0))  # a session that starts now
            await asyncio.sleep(0.2)

        await _lag_while(full, ticks)
        assert max(ticks) < 0.1, f"the loop waited {max(ticks) * 1000:.0f} ms"
        assert len(outbox.waiting().get("loud", [])) <= PER_SESSION

        # Reading again: each session's messages arrive in order, and the one that started
        # last is not queued behind the loud one's backlog (sessions take turns).
        got = await _receive_all(inbox)
        quiet, loud = _numbers(got, "quiet"), _numbers(got, "loud")
        assert quiet == list(range(20))
        # Every chunk is either received, in order, or counted as dropped (the oldest).
        assert loud == sorted(loud) and loud[-1] == 699, str(loud)
        assert len(loud) + outbox.dropped["loud"] == 700
        assert _numbers(got, "gone") == []
        late_at = next(i for i, msg in enumerate(got) if msg.session == "late")
        assert len(_numbers(got[late_at:], "loud")) >= PER_SESSION // 2, (late_at, len(got))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        stage.close()
        gateway.close()


class _OneAtATime:
    """A stage's socket with room for one message each time the stage reads one."""

    def __init__(self) -> None:
        self.sent: list[m.AudioIn] = []
        self._room = 0
        self._read = asyncio.Event()

    def try_send(self, msg: m.AudioIn) -> bool:
        if self._room == 0:
            return False
        self._room -= 1
        self.sent.append(msg)
        return True

    async def wait_writable(self, timeout_s: float) -> bool:
        await self._read.wait()
        self._read.clear()
        return True

    async def read(self) -> None:
        self._room += 1
        self._read.set()
        count = len(self.sent)
        for _ in range(100):
            await asyncio.sleep(0)
            if len(self.sent) > count:
                return
        raise AssertionError("the outbox did not fill the room the stage made")


async def test_sessions_take_turns_even_when_each_send_after_the_first_is_refused():
    """A refusal ends a pass; the next starts with the refused session, not with the first one
    (else a busy stage taking one message at a time would only ever hear that first session)."""
    socket = _OneAtATime()
    outbox = StageOutbox("asr", socket, PER_SESSION)  # type: ignore[arg-type]
    for session in "abc":
        for n in range(3):
            outbox.put(_audio(session, n))
    task = asyncio.create_task(outbox.run())
    try:
        for _ in range(3):
            await socket.read()
        outbox.put(_audio("d", 0))  # a session that starts now: after one message of each other
        for _ in range(7):
            await socket.read()
        assert [(msg.session, int(msg.pcm[0])) for msg in socket.sent] == [
            ("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("c", 1), ("d", 0), ("a", 2), ("b", 2), ("c", 2),
        ]
        assert outbox.waiting() == {} and outbox.sent == 10
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


SAID = ("Here is one more small thing. " * 17)[:500]  # 17 clauses: past the socket's 16


@pytest.mark.slow
async def test_the_real_gateway_with_its_stages_absent_answers_every_page_at_once():
    """The gateway process alone (no ASR, no TTS, no LLM: not started yet, as under compose).

    One page asks the avatar to say five long texts and /api/say speaks to every page, while
    another page and the first one ping: every pong comes at once. Before the TTS outbox, the
    first page's handler (and the HTTP say) waited on the absent TTS's full socket for good.
    """
    with ServiceStack() as stack:
        stack.start("gateway")
        await asyncio.to_thread(stack.wait_ready, "gateway")
        async with aiohttp.ClientSession() as http:
            (talker, talker_id), (other, other_id) = [await _page(http, stack.url) for _ in range(2)]
            for _ in range(5):  # the per-session burst of questions
                await talker.send_json({"type": "say", "text": SAID})
            await _pong_within(talker, 1.0)  # its handler took all five: it is not stuck in one
            started = time.monotonic()
            response = await asyncio.wait_for(http.post(stack.url + "/api/say", json={"text": SAID}), 5.0)
            said = await response.json()
            assert time.monotonic() - started < 1.0
            # The talker's bucket is empty; the other page was spoken to.
            assert response.status == 200 and said["rate_limited"] == [talker_id], said
            assert list(said["turns"]) == [other_id], said
            await _pong_within(other, 1.0)
            await _pong_within(talker, 1.0)


async def _pong_within(page, seconds: float) -> None:  # noqa: ANN001
    started = time.monotonic()
    await page.send_json({"type": "ping", "t": 1})
    await _wait_for(page, lambda e: e["type"] == "pong", 3.0)
    assert time.monotonic() - started < seconds


async def _page(http, url: str):  # noqa: ANN001, ANN202
    ws = await http.ws_connect(url.replace("http", "ws") + "/ws")
    await ws.send_json({"type": "hello", "version": 1})
    config = await _wait_for(ws, lambda e: e["type"] == "config", 5.0)
    return ws, config["session"]


async def _wait_for(ws, pred, timeout_s: float) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while True:
        msg = await asyncio.wait_for(ws.receive(), max(0.01, deadline - time.monotonic()))
        event = json.loads(msg.data)
        if pred(event):
            return event
