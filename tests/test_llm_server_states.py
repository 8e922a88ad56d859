"""The LLM service with your own server (issue 27): which model answered, a server that is
down, and one that stalls while another session goes on.

The server here is a real HTTP server on a loopback socket (port 0) speaking the OpenAI
streaming API; a question containing "stall" gets headers and then nothing, like an
overloaded server still in prefill. The answers of a real llama.cpp server are tested in
test_llm_own_server.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from services import messages
from services.llm.engines import build_engine
from services.llm.service import LlmService
from services.llm.settings import LlmSettings, llm_overrides


class _Capture:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, msg: Any) -> None:
        self.sent.append(msg)


def _handler(release: threading.Event) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            data = json.dumps({"data": [{"id": "test-model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            if not self.path.endswith("/chat/completions"):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            if "stall" in body["messages"][-1]["content"]:
                release.wait(30)
            for piece in ["Paris", " is", " the", " capital", "."]:
                chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, threading.Event]]:
    release = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(release))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", release
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _service(url: str, slow_s: float = 0.5) -> tuple[LlmService, _Capture, _Capture]:
    settings = dataclasses.replace(LlmSettings.from_env(llm_overrides(url, None)), slow_s=slow_s)
    assert settings.engine == "openai"
    out, events = _Capture(), _Capture()
    return LlmService(build_engine(settings), settings, out, events), out, events  # type: ignore[arg-type]


def _text(out: _Capture, session: str) -> str:
    return " ".join(m.text for m in out.sent if isinstance(m, messages.TextChunk) and m.session == session and m.text)


async def test_page_learns_which_model_answered(server: tuple[str, threading.Event]) -> None:
    url, _ = server
    service, out, events = _service(url)
    await service._answer(messages.UserText("a", 1, "Capital of France?", "typed"))
    assert _text(out, "a") == "Paris is the capital."
    status = [m for m in events.sent if isinstance(m, messages.LlmStatus)]
    port = url.split(":")[2].split("/")[0]
    assert [(s.state, s.model) for s in status] == [("answering", f"test-model @ 127.0.0.1:{port}")]


async def test_a_stalled_server_is_reported_slow_and_other_sessions_go_on(server: tuple[str, threading.Event]) -> None:
    url, release = server
    service, out, events = _service(url, slow_s=0.5)
    stalled = asyncio.create_task(service._answer(messages.UserText("a", 1, "please stall", "typed")))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await service._answer(messages.UserText("b", 1, "Capital of France?", "typed"))
    assert time.monotonic() - started < 5.0
    assert _text(out, "b") == "Paris is the capital."
    assert not stalled.done()
    await asyncio.sleep(0.6)
    slow = [m for m in events.sent if isinstance(m, messages.LlmStatus) and m.session == "a"]
    assert [m.state for m in slow] == ["slow"]
    assert "has not answered" in slow[0].detail and "test-model" in slow[0].detail
    assert not [m for m in events.sent if isinstance(m, messages.LlmStatus) and m.session == "b" and m.state == "slow"]
    release.set()  # the server catches up: the stalled answer arrives and says so
    await asyncio.wait_for(stalled, 10)
    assert _text(out, "a") == "Paris is the capital."
    assert [m.state for m in events.sent if isinstance(m, messages.LlmStatus) and m.session == "a"] == ["slow", "answering"]


async def test_a_server_that_is_down_gives_a_clear_error_at_once() -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service, out, events = _service(f"http://127.0.0.1:{port}/v1")
    started = time.monotonic()
    await service._answer(messages.UserText("a", 1, "Hello?", "typed"))
    assert time.monotonic() - started < 5.0
    errors = [m for m in events.sent if isinstance(m, messages.StageError)]
    assert len(errors) == 1 and errors[0].stage == "llm"
    assert "connection refused" in errors[0].message and f"127.0.0.1:{port}" in errors[0].message
    # The turn still ends, so the page leaves "thinking".
    assert [m.final for m in out.sent if isinstance(m, messages.TextChunk)] == [True]


async def test_the_gateway_tells_the_page_which_model_answers_and_when_it_is_slow(timeline) -> None:  # noqa: ANN001
    tl = timeline
    await tl.event(messages.LlmStatus("s1", 1, "llama3.2 @ 127.0.0.1:11434", "slow", "The language model has not answered for 5 s."))
    await tl.event(messages.LlmStatus("s1", 1, "llama3.2 @ 127.0.0.1:11434", "answering"))
    await tl.event(messages.LlmStatus("nobody", 1, "x", "answering"))  # an unknown session: dropped
    await asyncio.sleep(0.05)
    assert [(e["model"], e["state"], e["turn"]) for e in tl.page_events("llm")] == [
        ("llama3.2 @ 127.0.0.1:11434", "slow", 1), ("llama3.2 @ 127.0.0.1:11434", "answering", 1)
    ]
    assert tl.page_events("llm")[0]["detail"] == "The language model has not answered for 5 s."
