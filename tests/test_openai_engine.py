"""OpenAI-compatible LLM engine (services/llm/openai_engine.py) against a fake SSE server.

The fake server is a ThreadingHTTPServer on 127.0.0.1 (port 0) that speaks just enough of the
vLLM API: /v1/models, /v1/chat/completions (SSE) and, optionally, /tokenize.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.llm.engines import build_engine
from services.llm.openai_engine import LlmEngineError, OpenAiEngine, estimate_tokens
from services.llm.settings import LlmSettings

PIECES = ["Hello", " there", ",", " I am", " Ava", "."]
MESSAGES = [{"role": "user", "content": "Say hello."}]


@dataclass
class FakeServerState:
    """What the fake server should do and what it saw."""

    status: int = 200
    # Raw SSE body override (bytes written verbatim); None = stream PIECES properly.
    raw_body: bytes | None = None
    offer_tokenize: bool = False
    requests: list[tuple[str, dict]] = field(default_factory=list)
    # Set by the handler once the client has hung up on a stream.
    client_closed: threading.Event = field(default_factory=threading.Event)
    chunks_sent: int = 0


def _chunk(piece: str | None, finish: str | None = None) -> bytes:
    delta = {} if piece is None else {"content": piece}
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def _make_handler(state: FakeServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def _json(self, status: int, obj: object) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            state.requests.append((self.path, {}))
            if self.path == "/v1/models":
                self._json(200, {"data": [{"id": "fake-model", "max_model_len": 4096}]})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            state.requests.append((self.path, body))
            if self.path == "/tokenize":
                if state.offer_tokenize:
                    self._json(200, {"count": 42, "tokens": list(range(42))})
                else:
                    self._json(404, {"detail": "Not Found"})
                return
            if self.path != "/v1/chat/completions":
                self._json(404, {"error": "not found"})
                return
            if state.status != 200:
                self._json(state.status, {"error": {"message": "model exploded"}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            if state.raw_body is not None:
                self.wfile.write(state.raw_body)
                self.wfile.flush()
                return
            try:
                self.wfile.write(_chunk(None))  # role-only first chunk, like vLLM
                self.wfile.write(b": keep-alive comment\n\n")
                for piece in PIECES:
                    self.wfile.write(_chunk(piece))
                    self.wfile.flush()
                    state.chunks_sent += 1
                # A long tail that a stopped client must never read in full.
                for _ in range(2000):
                    self.wfile.write(_chunk(" more"))
                    self.wfile.flush()
                    state.chunks_sent += 1
                self.wfile.write(_chunk(None, finish="length"))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                state.client_closed.set()

    return Handler


@pytest.fixture
def fake_server() -> Iterator[tuple[str, FakeServerState]]:
    state = FakeServerState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="fake-openai", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_openai_llm_streams_text_in_pieces(fake_server: tuple[str, FakeServerState]) -> None:
    url, state = fake_server
    engine = OpenAiEngine(url, model="", max_new_tokens=16)
    pieces = []
    for piece in engine.stream(MESSAGES, should_stop=lambda: False):
        pieces.append(piece)
        if len(pieces) == len(PIECES):
            break
    assert pieces == PIECES
    # The model name was discovered from /v1/models, and its window taken from max_model_len.
    path, body = state.requests[-1]
    assert path == "/v1/chat/completions"
    assert body["model"] == "fake-model" and body["stream"] is True and body["max_tokens"] == 16
    assert body["messages"] == MESSAGES
    assert engine.context_tokens == 4096


def test_openai_llm_full_stream_ends_at_done(fake_server: tuple[str, FakeServerState]) -> None:
    url, _ = fake_server
    engine = OpenAiEngine(url, model="m")
    text = "".join(engine.stream(MESSAGES, should_stop=lambda: False))
    assert text.startswith("Hello there, I am Ava.")
    assert text.count(" more") == 2000


def test_openai_llm_stop_mid_stream_closes_connection(
    fake_server: tuple[str, FakeServerState],
) -> None:
    url, state = fake_server
    engine = OpenAiEngine(url, model="m")
    got: list[str] = []
    stop = threading.Event()
    for piece in engine.stream(MESSAGES, should_stop=stop.is_set):
        got.append(piece)
        if len(got) == 3:
            stop.set()
    # One more piece at most after the stop was raised.
    assert got == PIECES[:3]
    # The server notices the closed socket and stops writing well before its 2000-chunk tail.
    assert state.client_closed.wait(timeout=10), "server never saw the client hang up"
    assert state.chunks_sent < 2000


def test_openai_llm_http_500_is_clear(fake_server: tuple[str, FakeServerState]) -> None:
    url, state = fake_server
    state.status = 500
    engine = OpenAiEngine(url, model="m")
    with pytest.raises(LlmEngineError) as info:
        list(engine.stream(MESSAGES, should_stop=lambda: False))
    message = str(info.value)
    assert "HTTP 500" in message and "/v1/chat/completions" in message
    assert "model exploded" in message


def test_openai_llm_connection_refused_is_clear() -> None:
    # Bind then close to get a port that nothing listens on.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = OpenAiEngine(f"http://127.0.0.1:{port}/v1", model="m")
    with pytest.raises(LlmEngineError) as info:
        list(engine.stream(MESSAGES, should_stop=lambda: False))
    message = str(info.value)
    assert "connection refused" in message
    assert f"127.0.0.1:{port}" in message and "AVATAR_OPENAI_BASE_URL" in message


@pytest.mark.parametrize(
    "raw, expect",
    [
        (b"data: {not json\n\n", "not JSON"),
        (b"garbage line\n\n", "malformed SSE"),
        (b'data: {"error": {"message": "overloaded"}}\n\n', "overloaded"),
        (_chunk("Hi"), "ended before"),
    ],
    ids=["bad-json", "bad-sse-line", "error-event", "no-done"],
)
def test_openai_llm_malformed_sse_is_clear(
    fake_server: tuple[str, FakeServerState], raw: bytes, expect: str
) -> None:
    url, state = fake_server
    state.raw_body = raw
    engine = OpenAiEngine(url, model="m")
    with pytest.raises(LlmEngineError, match=expect) as info:
        list(engine.stream(MESSAGES, should_stop=lambda: False))
    assert "/v1/chat/completions" in str(info.value)


def test_openai_llm_count_tokens_uses_tokenize_when_offered(
    fake_server: tuple[str, FakeServerState],
) -> None:
    url, state = fake_server
    state.offer_tokenize = True
    engine = OpenAiEngine(url, model="m")
    assert engine.count_tokens(MESSAGES) == 42
    assert state.requests[-1][0] == "/tokenize"


def test_openai_llm_count_tokens_estimates_without_tokenize(
    fake_server: tuple[str, FakeServerState],
) -> None:
    url, state = fake_server
    engine = OpenAiEngine(url, model="m")
    long = [{"role": "user", "content": "x" * 400}]
    assert engine.count_tokens(long) == estimate_tokens(long) == 104
    asked = len(state.requests)
    engine.count_tokens(long)
    assert len(state.requests) == asked, "a missing /tokenize is asked about once only"
    assert engine.context_tokens == 8192


def test_openai_llm_built_from_settings(fake_server: tuple[str, FakeServerState]) -> None:
    url, _ = fake_server
    engine = build_engine(LlmSettings(engine="openai", model="m", openai_base_url=url))
    assert isinstance(engine, OpenAiEngine) and engine.name == "openai"
    assert "".join(engine.stream(MESSAGES, lambda: False)).startswith("Hello")
