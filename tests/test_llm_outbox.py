"""The gateway's questions to the LLM never make a shared loop wait (services/gateway/llm_outbox.py).

Real ZeroMQ sockets on ipc: the LLM's inbox is absent (not bound yet, as while its model loads),
then bound. Meanwhile each session's newer question replaces its older one, the pages are told
why they wait, and once the inbox is there each session's latest question arrives exactly once.
"""

import asyncio
import time

import pytest

from services import messages as m
from services.endpoints import Endpoints
from services.gateway.llm_outbox import RETRYING, STARTING, llm_outbox
from services.gateway.media_clock import SessionMedia
from services.gateway.session import Session
from services.transport import Transport
from tests.gateway_timeline import PageSocket


def _question(session: Session, text: str) -> m.UserText:
    session.turn += 1
    return m.UserText(session.id, session.turn, text, "speech", time.time(), "[]")


def _waiting(page: PageSocket) -> list[str]:
    return [e["message"] for e in page.events if e["type"] == "waiting"]


async def _settle_until(pred, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_questions_wait_for_an_absent_llm_without_blocking_and_the_latest_is_sent_once(tmp_path):
    gateway_side = Transport(Endpoints.in_dir(str(tmp_path)))
    llm_side = Transport(Endpoints.in_dir(str(tmp_path)))
    sessions = {sid: Session(sid, PageSocket(), SessionMedia(5)) for sid in ("a", "b", "c")}
    outbox = llm_outbox(gateway_side.push(gateway_side.endpoints.llm_in, immediate=True), sessions)
    task = asyncio.create_task(outbox.run())
    try:
        # 30 questions, ten per session, while the LLM's inbox does not exist: each ask returns
        # at once (a blocking send would stop this loop at the socket's high-water mark, 16).
        started = time.perf_counter()
        for i in range(10):
            for session in sessions.values():
                outbox.put(_question(session, f"question {i} from {session.id}"))
                await asyncio.sleep(0)
        assert time.perf_counter() - started < 1.0
        assert outbox.waiting() == {sid: [10] for sid in sessions}  # one slot each, the latest
        await _settle_until(lambda: all(_waiting(s.ws) == [STARTING] for s in sessions.values()))
        # Session "c" moves on (Stop) before the LLM is there: its question is not worth an answer.
        sessions["c"].turn += 1

        inbox = llm_side.pull(llm_side.endpoints.llm_in)
        got = [await asyncio.wait_for(inbox.recv(), 5) for _ in range(2)]
        assert sorted((q.session, q.turn, q.text) for q in got) == [
            ("a", 10, "question 9 from a"), ("b", 10, "question 9 from b"),
        ]
        await _settle_until(lambda: not outbox.waiting())
        # Told when the question went; nothing else arrives (each latest question once).
        for session in sessions.values():
            assert _waiting(session.ws) == [STARTING, ""], session.id
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(inbox.recv(), 0.3)

        # Reached once, the LLM goes away: the page hears "retrying", then it is answered.
        llm_side.close()
        await asyncio.sleep(0.3)  # the gateway's side notices the peer is gone
        for _ in range(40):  # past the high-water marks of both sides, were it still connected
            outbox.put(_question(sessions["a"], "after the restart"))
        await _settle_until(lambda: _waiting(sessions["a"].ws)[-1] == RETRYING)
        llm_again = Transport(Endpoints.in_dir(str(tmp_path)))
        try:
            inbox = llm_again.pull(llm_again.endpoints.llm_in)
            q = await asyncio.wait_for(inbox.recv(), 5)
            assert (q.session, q.turn) == ("a", sessions["a"].turn)
        finally:
            llm_again.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gateway_side.close()
