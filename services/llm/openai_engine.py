"""An LLM engine that talks to an OpenAI-compatible server (vLLM, TGI, Ollama).

This is how the LLM stage scales out: the serving engine batches many sessions on its GPUs and we
only stream text from it. ``stream`` POSTs ``/chat/completions`` with ``stream: true`` and reads
the Server-Sent Events reply line by line with the standard library (``http.client``), so it is
an ordinary blocking generator for the service's worker thread.

Stopping: ``should_stop`` is checked after every SSE line; when it turns true the generator stops
reading and closes the connection, which is how vLLM/TGI learn to abort the request and free
the batch slot. The stop latency is therefore at most one server chunk (one token, usually
10-50 ms). Closing the generator early (``.close()``) closes the connection too.

Errors::

    LlmEngineError            every failure names the URL it concerns
      (connection refused / unreachable / timed out, HTTP status >= 400 with the server's reply,
       malformed SSE or JSON, an error event inside the stream, a stream that ends early)

Model name: ``settings.model`` is sent as is. When it is empty we ask ``GET /models`` once and
use the first model the server serves. Token counting uses vLLM's ``POST /tokenize`` when the
server offers it and falls back to a chars/4 estimate otherwise (remembered per engine).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from services.llm.engine import ChatMessage
from services.llm.settings import LlmSettings

logger = logging.getLogger(__name__)

# Used unless the server's model listing reports its window (vLLM: "max_model_len").
DEFAULT_CONTEXT_TOKENS = 8192
# A rough, model-agnostic estimate for English: about four characters per token.
CHARS_PER_TOKEN = 4
# Per-message overhead of chat templates (role markers, separators), in tokens.
TOKENS_PER_MESSAGE = 4
CONNECT_TIMEOUT_S = 5.0
# Longest silence we accept between two SSE lines (covers prefill of a long prompt under load).
READ_TIMEOUT_S = 60.0
ERROR_BODY_CHARS = 500


class LlmEngineError(RuntimeError):
    """The OpenAI-compatible server failed us; the message names the URL and what to check."""


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """Where the OpenAI-compatible API lives, split for http.client."""

    scheme: str  # "http" | "https"
    host: str
    port: int
    base_path: str  # e.g. "/v1" (no trailing slash)

    @classmethod
    def parse(cls, base_url: str) -> "ServerAddress":
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LlmEngineError(
                f"AVATAR_OPENAI_BASE_URL={base_url!r} is not an http(s) URL "
                "(expected something like http://127.0.0.1:8000/v1)"
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def connect(self, timeout_s: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout_s)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)


def estimate_tokens(messages: list[ChatMessage]) -> int:
    """chars/4 plus a small per-message overhead: close enough to trim history safely."""
    chars = sum(len(m.get("content", "")) for m in messages)
    return chars // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * len(messages)


class OpenAiEngine:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str = "",
        api_key: str = "",
        max_new_tokens: int = 96,
        temperature: float = 0.0,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._address = ServerAddress.parse(base_url)
        self._api_key = api_key
        self._max_new_tokens = max_new_tokens
        self._temperature = temperature
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        # Resolved lazily (the server may start after us); guarded because stream() and
        # count_tokens() may run on different worker threads.
        self._lock = threading.Lock()
        self._model = model
        self._context_tokens = DEFAULT_CONTEXT_TOKENS
        self._tokenize_supported: bool | None = None

    @classmethod
    def from_settings(cls, settings: LlmSettings) -> "OpenAiEngine":
        return cls(
            base_url=settings.openai_base_url,
            model=settings.model,
            api_key=settings.openai_api_key,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
        )

    @property
    def context_tokens(self) -> int:
        return self._context_tokens

    @property
    def model_name(self) -> str:
        """The model the server answers with (known after the first request) and where."""
        return f"{self._model or '?'} @ {self._address.host}:{self._address.port}"

    # --- the main method -----------------------------------------------------------------

    def stream(
        self,
        messages: list[ChatMessage],
        should_stop: Callable[[], bool],
        max_new_tokens: int | None = None,
    ) -> Iterator[str]:
        # Every stream has its own connection and nothing here is shared while streaming, so
        # concurrent sessions reach the server concurrently and it batches them.
        body = {
            "model": self._resolve_model(),
            "messages": messages,
            "stream": True,
            "max_tokens": max_new_tokens or self._max_new_tokens,
            "temperature": self._temperature,
        }
        path = f"{self._address.base_path}/chat/completions"
        url = self._address.url(path)
        conn, resp = self._request("POST", path, body, accept="text/event-stream")
        finished = False
        try:
            for data in _sse_data(resp, url):
                if data == "[DONE]":
                    finished = True
                    break
                piece, done = _delta_text(data, url)
                if piece:
                    yield piece
                finished = finished or done
                if should_stop():
                    logger.info("OpenAiEngine(%s): stopped mid-answer, closing the stream", url)
                    return
            if not finished and not should_stop():
                raise LlmEngineError(f"{url}: the stream ended before [DONE] or a finish_reason")
        except (TimeoutError, socket.timeout) as exc:
            raise LlmEngineError(
                f"{url}: no data for {self._read_timeout_s:.0f} s; the server stalled"
            ) from exc
        except (http.client.HTTPException, ConnectionError) as exc:
            raise LlmEngineError(f"{url}: connection broke mid-stream ({exc!r})") from exc
        finally:
            # Closing the socket is what tells vLLM/TGI to abort generation for this request.
            # The response holds its own reference to the socket, so close both.
            resp.close()
            conn.close()

    def close(self) -> None:
        """Nothing to release: each stream closes its own connection."""

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        if self._tokenize_supported is False:
            return estimate_tokens(messages)
        # vLLM serves /tokenize at the root, next to /v1.
        base = self._address.base_path
        root = base[: -len("/v1")] if base.endswith("/v1") else base
        path = f"{root}/tokenize"
        try:
            reply = self._json_request(
                "POST", path, {"model": self._resolve_model(), "messages": messages}
            )
            count = int(reply["count"])
        except (LlmEngineError, KeyError, TypeError, ValueError) as exc:
            if self._tokenize_supported is None:
                logger.info(
                    "OpenAiEngine(%s): no usable /tokenize (%s); estimating chars/%d",
                    self._address.url(path), exc, CHARS_PER_TOKEN,
                )
            self._tokenize_supported = False
            return estimate_tokens(messages)
        self._tokenize_supported = True
        return count

    # --- HTTP plumbing -------------------------------------------------------------------

    def _resolve_model(self) -> str:
        with self._lock:
            if self._model:
                return self._model
            path = f"{self._address.base_path}/models"
            reply = self._json_request("GET", path, None)
            try:
                entry = reply["data"][0]
                self._model = str(entry["id"])
            except (KeyError, IndexError, TypeError) as exc:
                raise LlmEngineError(
                    f"{self._address.url(path)} lists no model; set AVATAR_LLM_MODEL"
                ) from exc
            window = entry.get("max_model_len")
            if isinstance(window, int) and window > 0:
                self._context_tokens = window
            logger.info(
                "OpenAiEngine(%s): using model %s (context %d tokens)",
                self._address.url(path), self._model, self._context_tokens,
            )
            return self._model

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, accept: str
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request; return the open connection and a 2xx response, or raise."""
        url = self._address.url(path)
        headers = {"Accept": accept}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        conn = self._address.connect(self._connect_timeout_s)
        try:
            conn.connect()
            # Connect fast (a missing server should fail at once), then allow slow prefill.
            if conn.sock is not None:
                conn.sock.settimeout(self._read_timeout_s)
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
        except ConnectionRefusedError as exc:
            conn.close()
            raise LlmEngineError(
                f"{url}: connection refused. Is the OpenAI-compatible server (vLLM, TGI, Ollama) "
                "running? Set AVATAR_OPENAI_BASE_URL to its address."
            ) from exc
        except (TimeoutError, socket.timeout) as exc:
            conn.close()
            raise LlmEngineError(f"{url}: timed out waiting for the server") from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise LlmEngineError(f"{url}: cannot reach the server ({exc!r})") from exc
        if resp.status >= 400:
            detail = resp.read(ERROR_BODY_CHARS * 4).decode("utf-8", "replace")[:ERROR_BODY_CHARS]
            resp.close()
            conn.close()
            raise LlmEngineError(f"{url}: HTTP {resp.status} {resp.reason}: {detail.strip()}")
        return conn, resp

    def _json_request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        url = self._address.url(path)
        conn, resp = self._request(method, path, body, accept="application/json")
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise LlmEngineError(f"{url}: connection broke while reading ({exc!r})") from exc
        finally:
            resp.close()
            conn.close()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise LlmEngineError(f"{url}: reply is not JSON: {raw[:200]!r}") from exc


def _sse_data(resp: http.client.HTTPResponse, url: str) -> Iterator[str]:
    """Yield the data of each Server-Sent Event (multi-line data joined with newlines)."""
    lines: list[str] = []
    while True:
        raw = resp.readline()
        if not raw:
            if lines:
                yield "\n".join(lines)
            return
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise LlmEngineError(f"{url}: malformed SSE line (not UTF-8): {raw[:200]!r}") from exc
        if line == "":
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith(":"):
            continue  # an SSE comment, used as a keep-alive
        field, _, value = line.partition(":")
        if field == "data":
            lines.append(value[1:] if value.startswith(" ") else value)
        elif field not in ("event", "id", "retry"):
            raise LlmEngineError(f"{url}: malformed SSE line {line[:200]!r}")


def _delta_text(data: str, url: str) -> tuple[str, bool]:
    """The text piece of one chat.completion.chunk and whether it carries a finish_reason."""
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise LlmEngineError(f"{url}: malformed SSE data (not JSON): {data[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise LlmEngineError(f"{url}: malformed SSE data (not an object): {data[:200]!r}")
    if "error" in chunk:
        raise LlmEngineError(f"{url}: the server reported an error mid-stream: {chunk['error']!r}")
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise LlmEngineError(f"{url}: malformed chunk without 'choices': {data[:200]!r}")
    if not choices:
        return "", False  # e.g. a trailing usage-only chunk
    choice = choices[0]
    delta = choice.get("delta") or {}
    piece = delta.get("content") or ""
    if not isinstance(piece, str):
        raise LlmEngineError(f"{url}: malformed chunk, content is not text: {data[:200]!r}")
    return piece, choice.get("finish_reason") is not None
