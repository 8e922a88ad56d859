"""Nothing in the LLM stage makes one session wait for another: the service streams as many
answers at once as the gateway admits sessions, and the OpenAI-compatible engine sends
concurrent requests concurrently (the server batches them). Both are shown with a barrier that
only opens when every answer is under way at the same moment."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services import messages as m
from services.llm.openai_engine import OpenAiEngine
from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from tests.fakes import RecordingSender

BARRIER_S = 10.0


class AllAtOnceLlm:
    """An engine whose answers can only start once ``sessions`` of them are running."""

    name = "all-at-once"
    context_tokens = 1000

    def __init__(self, sessions: int) -> None:
        self.barrier = threading.Barrier(sessions, timeout=BARRIER_S)

    def count_tokens(self, messages) -> int:
        return sum(len(msg["content"].split()) for msg in messages)

    def stream(self, messages, should_stop, max_new_tokens=None):
        self.barrier.wait()  # BrokenBarrierError if the service ran fewer at once
        yield "Hello there, everyone."


async def test_llm_service_streams_every_admitted_session_at_once():
    settings = LlmSettings(min_clause_chars=5)
    sessions = [f"s{i}" for i in range(settings.max_sessions)]
    out, events = RecordingSender(), RecordingSender()
    svc = LlmService(AllAtOnceLlm(len(sessions)), settings, out, events)
    for session in sessions:
        await svc.handle(m.UserText(session, 1, "hi", "speech", 0.0))

    async def all_final() -> None:
        while {c.session for c in out.of(m.TextChunk) if c.final} != set(sessions):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(all_final(), BARRIER_S + 5)
    assert events.of(m.StageError) == []
    await svc._lanes.aclose()


@pytest.fixture
def barrier_server():
    """A fake OpenAI-compatible server whose streams start only when two are open at once."""
    barrier = threading.Barrier(2, timeout=BARRIER_S)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for piece in ("Hi", " there."):
                chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-openai", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_llm_openai_engine_sends_concurrent_streams_concurrently(barrier_server):
    engine = OpenAiEngine(barrier_server, model="fake-model")
    answers: dict[int, str] = {}
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            answers[i] = "".join(engine.stream([{"role": "user", "content": "hi"}], lambda: False))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BARRIER_S + 5)
    assert errors == []
    assert answers == {0: "Hi there.", 1: "Hi there."}
