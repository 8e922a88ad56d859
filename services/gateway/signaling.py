"""Validation of every WebSocket message from the browser.

Nothing from the browser is trusted: each message must be a JSON object under a size limit,
with a known ``type`` and fields of the right type and size. Anything else raises
``ClientMessageError`` with a message that is safe to show to the person; the session goes on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SDP_CHARS = 60_000
MAX_TEXT_CHARS = 500
MAX_CANDIDATE_CHARS = 1_000


class ClientMessageError(ValueError):
    """A browser message we refuse; ``code`` is machine-readable, str() is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    conversation: str = ""  # the id the page kept, to continue a conversation after a reconnect
    avatar: str = ""  # the avatar the page chose (services/avatar/store.py); "" = the default


@dataclass(frozen=True, slots=True)
class ChooseAvatar:
    avatar: str


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str


@dataclass(frozen=True, slots=True)
class Candidate:
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Say:
    """Speak this text word for word (services/gateway/say.py); validated as a typed question."""

    text: str


@dataclass(frozen=True, slots=True)
class InterruptRequest:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    t: float


ClientMessage = Hello | Offer | Candidate | Text | Say | InterruptRequest | Ping | ChooseAvatar


def parse(raw: str | bytes) -> ClientMessage:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ClientMessageError("too_large", f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClientMessageError("bad_json", f"message is not JSON: {exc.msg if hasattr(exc, 'msg') else exc}") from exc
    except RecursionError as exc:
        # json's C decoder recurses per nesting level: "[" * 5000 exhausts the stack.
        raise ClientMessageError("bad_json", "message is nested too deeply") from exc
    if not isinstance(data, dict):
        raise ClientMessageError("bad_message", "message must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ClientMessageError("bad_message", "message has no string 'type'")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ClientMessageError("unknown_type", f"unknown message type {kind[:40]!r}")
    return parser(data)


def _field(data: dict[str, Any], name: str, kind: type, kind_name: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ClientMessageError("bad_field", f"'{data['type']}' needs {kind_name} field '{name}'")
    return value


def _hello(data: dict[str, Any]) -> Hello:
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version != 1:
        raise ClientMessageError("bad_version", "unsupported protocol version (this server speaks 1)")
    conversation = data.get("conversation", "")
    if conversation is None:
        conversation = ""
    if not isinstance(conversation, str) or len(conversation) > 64:
        raise ClientMessageError("bad_field", "'hello' field 'conversation' must be a short string")
    return Hello(version, conversation, _avatar_id(data.get("avatar", "")))


def _avatar_id(value: Any) -> str:
    if value is None:
        return ""
    # The store's ids: "astronaut" or 16 hex digits (never a path).
    if not isinstance(value, str) or (value and not re.fullmatch(r"astronaut|[0-9a-f]{16}", value)):
        raise ClientMessageError("bad_field", "'avatar' must be an avatar id from /api/avatars")
    return value


def _choose_avatar(data: dict[str, Any]) -> ChooseAvatar:
    avatar = _avatar_id(data.get("id"))
    if not avatar:
        raise ClientMessageError("bad_field", "'avatar' needs an 'id'")
    return ChooseAvatar(avatar)


def _offer(data: dict[str, Any]) -> Offer:
    sdp = _field(data, "sdp", str, "a string")
    if len(sdp) > MAX_SDP_CHARS:
        raise ClientMessageError("bad_sdp", "SDP offer is too large")
    if not sdp.startswith("v=0"):
        raise ClientMessageError("bad_sdp", "SDP offer must start with 'v=0'")
    if "m=audio" not in sdp:
        raise ClientMessageError("bad_sdp", "SDP offer has no audio section (is the microphone on?)")
    return Offer(sdp)


def _candidate(data: dict[str, Any]) -> Candidate:
    cand = data.get("candidate")
    if not isinstance(cand, dict):
        raise ClientMessageError("bad_field", "'candidate' needs an object field 'candidate'")
    text = cand.get("candidate")
    if not isinstance(text, str) or len(text) > MAX_CANDIDATE_CHARS:
        raise ClientMessageError("bad_field", "candidate.candidate must be a short string")
    mid = cand.get("sdpMid")
    index = cand.get("sdpMLineIndex")
    if mid is not None and not isinstance(mid, str):
        raise ClientMessageError("bad_field", "candidate.sdpMid must be a string")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
        raise ClientMessageError("bad_field", "candidate.sdpMLineIndex must be an integer")
    return Candidate(text, mid, index)


def _text(data: dict[str, Any]) -> Text:
    text = _field(data, "text", str, "a string").strip()
    if not text:
        raise ClientMessageError("bad_text", "text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise ClientMessageError("bad_text", f"text is longer than {MAX_TEXT_CHARS} characters")
    # Control characters have no business in a chat message and confuse tokenizers and logs.
    text = "".join(ch for ch in text if ch.isprintable() or ch in "\n\t").strip()
    if not text:
        raise ClientMessageError("bad_text", "text is empty")
    return Text(text)


def _say(data: dict[str, Any]) -> Say:
    return Say(_text(data).text)


def _interrupt(data: dict[str, Any]) -> InterruptRequest:
    return InterruptRequest()


def _ping(data: dict[str, Any]) -> Ping:
    t = data.get("t", 0)
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        raise ClientMessageError("bad_field", "'ping' field 't' must be a number")
    return Ping(float(t))


_PARSERS = {
    "hello": _hello,
    "offer": _offer,
    "candidate": _candidate,
    "text": _text,
    "say": _say,
    "interrupt": _interrupt,
    "ping": _ping,
    "avatar": _choose_avatar,
}
