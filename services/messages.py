"""The one message vocabulary that crosses process boundaries.

Every message is a frozen, slotted dataclass and carries ``session`` and ``turn``.
On the wire a message is a ZeroMQ multipart message::

    [type name (ascii), msgpack header, raw array buffer, raw array buffer, ...]

The header holds every scalar field; each ``np.ndarray`` field is replaced in the header by
``{"dtype": ..., "shape": ...}`` and its bytes travel in their own frame, so large images and
audio are never copied into msgpack. Nothing is ever pickled: decoding only accepts the message
types registered here, checks every field's type, and rebuilds arrays with ``np.frombuffer``.

Images in messages are RGB uint8 ``(H, W, 3)``; audio is 16 kHz mono int16.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from typing import Any, Union, get_args, get_type_hints

import msgpack
import numpy as np


class MessageError(ValueError):
    """A frame sequence that is not a valid message of this vocabulary."""


# --- data plane: gateway -> asr -> llm -> tts -> lipsync -> gateway --------------------------


@dataclass(frozen=True, slots=True)
class AudioIn:
    """20 ms (or so) of the user's microphone, resampled to 16 kHz mono int16."""

    session: str
    turn: int
    pcm: np.ndarray
    # The avatar's voice was playing when this was captured (or within its echo tail): ASR
    # then asks for stronger evidence before it calls speech onset (the server echo guard).
    avatar_audible: bool = False


@dataclass(frozen=True, slots=True)
class UserText:
    """One finished user utterance (spoken or typed) that the LLM should answer."""

    session: str
    turn: int
    text: str
    source: str  # "speech" | "typed"
    # Wall-clock time (time.time()) at which the user stopped speaking; 0.0 when typed.
    speech_end_unix_s: float = 0.0
    # The conversation before this turn, as a JSON list of {"role", "content"} chat messages.
    # The gateway owns it and sends it every time, so a restarted LLM loses nothing.
    history: str = ""


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A clause of the answer, streamed from the LLM to TTS."""

    session: str
    turn: int
    index: int
    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """The synthesized voice of one clause at 16 kHz, from TTS to lip-sync."""

    session: str
    turn: int
    index: int
    text: str
    pcm: np.ndarray
    final: bool
    # Which phoneme sounds over which samples of ``pcm`` (services/phoneme_timing.py's wire
    # text); "" when the voice has no timing (lip-sync then follows loudness).
    phonemes: str = ""


@dataclass(frozen=True, slots=True)
class AvatarFrame:
    """One 25 fps picture and exactly the 640 samples of voice under it.

    ``text`` is set on the first frame of a clause, so the gateway knows what the user has heard.
    """

    session: str
    turn: int
    index: int
    image: np.ndarray
    audio: np.ndarray
    text: str = ""
    final: bool = False


# --- events to the gateway (stages -> gateway) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class AvatarText:
    """The text of an answer chunk for a session without media (lipsync -> gateway).

    Stands in for the AvatarFrames that were not rendered because nobody could watch them, so
    a WebSocket-only page still gets its answer as text, and the turn still ends.
    """

    session: str
    turn: int
    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The ASR's VAD heard the user start speaking (barge-in trigger)."""

    session: str
    turn: int


@dataclass(frozen=True, slots=True)
class Transcript:
    """The user's words so far (partial) or the finished utterance (final)."""

    session: str
    turn: int
    text: str
    final: bool
    # With final: wall-clock time (time.time()) the user stopped speaking.
    speech_end_unix_s: float = 0.0
    # Not final: the VAD just heard silence after speech, and this is the utterance so far.
    # The gateway may start answering it at once (speculative end of turn); the endpoint,
    # or a SpeechResumed, decides whether that answer is kept.
    tentative: bool = False


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """The user went on speaking after a tentative end of turn: a speculative answer is void."""

    session: str
    turn: int


@dataclass(frozen=True, slots=True)
class StageTiming:
    """A per-turn latency figure, e.g. stage='llm', name='first_token', ms=180."""

    session: str
    turn: int
    stage: str
    name: str
    ms: float


@dataclass(frozen=True, slots=True)
class StageNote:
    """A per-turn fact that is not a time, e.g. stage='lipsync', name='mouth', value='visemes'."""

    session: str
    turn: int
    stage: str
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class StageError:
    """An error that the person should see; never swallowed."""

    session: str
    turn: int
    stage: str
    message: str


@dataclass(frozen=True, slots=True)
class LlmStatus:
    """Which model is answering a turn and how it goes, for the page's Stats panel.

    ``state``: "answering" (the first token came), "slow" (no token yet after the LLM's
    AVATAR_LLM_SLOW_S; ``detail`` says so in words). A server that is down sends a StageError.
    """

    session: str
    turn: int
    model: str
    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AvatarPrepared:
    """Lip-sync -> gateway: how the engine's preparation of ``avatar`` goes (``PrepareAvatar``).

    ``state``: "preparing" (``progress`` 0..1 of the engine's step, ``step`` in words),
    "ready" (kept in the avatar's store entry) or "failed" (``message`` says why, for a person).
    """

    session: str  # always ""
    turn: int
    avatar: str
    engine: str
    step: str
    progress: float
    state: str
    message: str = ""


# --- control plane: gateway PUB -> every stage SUB --------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionOpened:
    session: str
    turn: int = 0


@dataclass(frozen=True, slots=True)
class SessionClosed:
    session: str
    turn: int = 0


@dataclass(frozen=True, slots=True)
class SessionAvatar:
    """The session shows ``avatar`` (an id of the avatar store, services/avatar/store.py) from
    now on; lip-sync loads it from the store (shared by every session on it)."""

    session: str
    turn: int
    avatar: str


@dataclass(frozen=True, slots=True)
class PrepareAvatar:
    """Run the lip-sync engine's own preparation of ``avatar`` now (an upload), before any
    session shows it; lip-sync answers with ``AvatarPrepared`` events. Sent again until it is
    answered (a PUB message to a stage that is starting is lost); a repeat costs nothing."""

    session: str  # always "" (not about a session)
    turn: int
    avatar: str


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Everything of ``session`` older than ``turn`` is stale: drop it and stop work in flight.

    ``heard_text`` is what the user actually heard of the interrupted answer, so the LLM can
    keep only that in the history. ``barge_in`` is False when the turn moves on without cutting
    the avatar off (it was silent).
    """

    session: str
    turn: int
    heard_text: str = ""
    barge_in: bool = False


@dataclass(frozen=True, slots=True)
class FlowCredit:
    """How many frames lip-sync may send for ``session``: per-session backpressure.

    The gateway counts the session's AvatarFrames it has ``received`` (any turn) and the
    ``room`` left in the session's output queue. Lip-sync, which counts the frames it has sent,
    may send while ``sent < received + room``: frames still in flight are accounted for, and a
    lost or repeated credit does no harm (the gateway re-sends it periodically). A lip-sync that
    restarted (sent < received is impossible otherwise) realigns its count to ``received``.

    ``media`` is False when the session has no playing media (no call yet, ICE failed, the peer
    closed, or the tracks stopped pulling). Lip-sync then renders nothing for it and sends the
    answer's text as ``AvatarText`` at once, so it never holds anything up.
    """

    session: str
    turn: int
    received: int
    room: int
    media: bool


# --- supervision: service -> main.py ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceReady:
    session: str  # always "" (not about a session); kept so every message has the same shape
    turn: int
    service: str
    pid: int


@dataclass(frozen=True, slots=True)
class ServiceRestarted:
    """The supervisor restarted a service that died (for the gateway's metrics and logs)."""

    session: str  # always ""
    turn: int
    service: str
    exit_code: int


@dataclass(frozen=True, slots=True)
class ServiceHeartbeat:
    """Sent every second from a service's event loop: silence means the loop is stuck."""

    session: str  # always ""
    turn: int
    service: str
    pid: int
    at: float  # time.time() when sent


Message = Union[
    AudioIn,
    UserText,
    TextChunk,
    SpeechAudio,
    AvatarFrame,
    AvatarText,
    SpeechStarted,
    Transcript,
    SpeechResumed,
    StageTiming,
    StageNote,
    StageError,
    LlmStatus,
    SessionOpened,
    SessionClosed,
    SessionAvatar,
    PrepareAvatar,
    AvatarPrepared,
    Interrupt,
    FlowCredit,
    ServiceReady,
    ServiceRestarted,
    ServiceHeartbeat,
]

_REGISTRY: dict[str, type] = {cls.__name__: cls for cls in get_args(Message)}

_MAX_ARRAY_BYTES = 64 * 1024 * 1024
_ALLOWED_DTYPES = frozenset({"int16", "uint8", "float32"})


@dataclass(frozen=True, slots=True)
class _FieldSpec:
    name: str
    kind: type
    optional_default: bool


_SPECS_CACHE: dict[type, tuple[_FieldSpec, ...]] = {}


def _specs(cls: type) -> tuple[_FieldSpec, ...]:
    specs = _SPECS_CACHE.get(cls)
    if specs is None:
        hints = get_type_hints(cls)
        specs = tuple(
            _FieldSpec(
                f.name,
                hints[f.name],
                f.default is not dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        )
        _SPECS_CACHE[cls] = specs
    return specs


def encode(msg: Any) -> list[bytes | memoryview]:
    """Message -> multipart frames (arrays are sent from their own buffers, not copied)."""
    cls = type(msg)
    if _REGISTRY.get(cls.__name__) is not cls:
        raise MessageError(f"not a registered message type: {cls!r}")
    header: dict[str, Any] = {}
    buffers: list[bytes | memoryview] = []
    for spec in _specs(cls):
        value = getattr(msg, spec.name)
        if spec.kind is np.ndarray:
            arr = np.ascontiguousarray(value)
            header[spec.name] = {"dtype": arr.dtype.name, "shape": list(arr.shape)}
            buffers.append(memoryview(arr).cast("B") if arr.size else b"")
        else:
            header[spec.name] = value
    return [cls.__name__.encode("ascii"), msgpack.packb(header, use_bin_type=True), *buffers]


def decode(frames: list[bytes] | list[Any]) -> Any:
    """Multipart frames -> message. Raises MessageError on anything unexpected."""
    if len(frames) < 2:
        raise MessageError("a message needs at least a type frame and a header frame")
    raw = [bytes(f.buffer) if hasattr(f, "buffer") else bytes(f) for f in frames]
    name = raw[0].decode("ascii", errors="replace")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise MessageError(f"unknown message type {name!r}")
    try:
        header = msgpack.unpackb(raw[1], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MessageError(f"{name}: header is not msgpack: {exc}") from exc
    if not isinstance(header, dict):
        raise MessageError(f"{name}: header is not a map")
    buffers = iter(raw[2:])
    kwargs: dict[str, Any] = {}
    for spec in _specs(cls):
        if spec.name not in header:
            if spec.optional_default:
                continue
            raise MessageError(f"{name}: missing field {spec.name!r}")
        value = header[spec.name]
        if spec.kind is np.ndarray:
            kwargs[spec.name] = _array_from(name, spec.name, value, next(buffers, None))
        else:
            kwargs[spec.name] = _checked(name, spec, value)
    return cls(**kwargs)


def _checked(name: str, spec: _FieldSpec, value: Any) -> Any:
    kind = spec.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool):
        raise MessageError(f"{name}.{spec.name}: expected int, got bool")
    if not isinstance(value, kind):
        raise MessageError(f"{name}.{spec.name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _array_from(name: str, field_name: str, meta: Any, buf: bytes | None) -> np.ndarray:
    if buf is None:
        raise MessageError(f"{name}.{field_name}: array frame missing")
    if not isinstance(meta, dict) or not isinstance(meta.get("dtype"), str):
        raise MessageError(f"{name}.{field_name}: bad array header")
    dtype_name, shape = meta["dtype"], meta.get("shape")
    if dtype_name not in _ALLOWED_DTYPES:
        raise MessageError(f"{name}.{field_name}: dtype {dtype_name!r} not allowed")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise MessageError(f"{name}.{field_name}: bad shape {shape!r}")
    dtype = np.dtype(dtype_name)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected != len(buf) or expected > _MAX_ARRAY_BYTES:
        raise MessageError(f"{name}.{field_name}: {len(buf)} bytes for shape {shape} {dtype_name}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def message_types() -> dict[str, type]:
    """Name -> class of every message (read-only copy, for tests and docs)."""
    return dict(_REGISTRY)


