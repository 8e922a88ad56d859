"""The message vocabulary: every type round-trips; malformed frames are refused, never unpickled."""

import msgpack
import numpy as np
import pytest

from services import messages as m


def _roundtrip(msg):
    return m.decode([bytes(f) for f in m.encode(msg)])


def test_every_message_type_carries_session_and_turn():
    for name, cls in m.message_types().items():
        fields = cls.__dataclass_fields__
        assert "session" in fields and "turn" in fields, name


def test_avatar_frame_roundtrip_keeps_image_and_exact_audio():
    image = np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    audio = np.arange(640, dtype=np.int16)
    out = _roundtrip(m.AvatarFrame("s1", 3, 7, image, audio, "Hello there.", True))
    assert isinstance(out, m.AvatarFrame)
    assert (out.session, out.turn, out.index, out.text, out.final) == ("s1", 3, 7, "Hello there.", True)
    np.testing.assert_array_equal(out.image, image)
    np.testing.assert_array_equal(out.audio, audio)
    assert out.audio.dtype == np.int16 and out.image.dtype == np.uint8


@pytest.mark.parametrize(
    "msg",
    [
        m.AudioIn("s", 0, np.zeros(320, np.int16)),
        m.UserText("s", 1, "hi", "typed", 12.5),
        m.TextChunk("s", 1, 0, "Hello,", False),
        m.SpeechAudio("s", 1, 0, "Hello,", np.ones(100, np.int16), False),
        m.SpeechStarted("s", 2),
        m.Transcript("s", 2, "what time", True, 99.0),
        m.StageTiming("s", 2, "llm", "first_token", 120.5),
        m.StageError("s", 2, "tts", "boom"),
        m.SessionOpened("s"),
        m.SessionClosed("s"),
        m.Interrupt("s", 4, "I was saying", True),
        m.ServiceReady("", 0, "asr", 123),
        m.ServiceRestarted("", 0, "llm", -9),
    ],
)
def test_roundtrip(msg):
    out = _roundtrip(msg)
    assert type(out) is type(msg)
    for name in msg.__dataclass_fields__:
        a, b = getattr(msg, name), getattr(out, name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b


def test_messages_are_frozen():
    msg = m.TextChunk("s", 1, 0, "x", False)
    with pytest.raises(AttributeError):
        msg.text = "y"  # type: ignore[misc]


def test_unknown_type_is_refused():
    with pytest.raises(m.MessageError, match="unknown message type"):
        m.decode([b"Pickle", msgpack.packb({})])


def test_wrong_field_type_is_refused():
    header = msgpack.packb({"session": "s", "turn": "one", "text": "x", "final": True, "index": 0})
    with pytest.raises(m.MessageError, match="turn"):
        m.decode([b"TextChunk", header])


def test_missing_field_is_refused():
    with pytest.raises(m.MessageError, match="missing field"):
        m.decode([b"TextChunk", msgpack.packb({"session": "s"})])


def test_array_size_mismatch_is_refused():
    header = msgpack.packb({"session": "s", "turn": 0, "pcm": {"dtype": "int16", "shape": [320]}})
    with pytest.raises(m.MessageError, match="bytes for shape"):
        m.decode([b"AudioIn", header, b"\x00" * 10])


def test_object_dtype_is_refused():
    header = msgpack.packb({"session": "s", "turn": 0, "pcm": {"dtype": "object", "shape": [1]}})
    with pytest.raises(m.MessageError, match="not allowed"):
        m.decode([b"AudioIn", header, b"\x00" * 8])


def test_garbage_header_is_refused():
    with pytest.raises(m.MessageError):
        m.decode([b"TextChunk", b"\xc1\xc1\xc1"])
