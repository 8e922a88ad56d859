"""Every browser message is validated; bad ones get a clear, specific error."""

import json

import pytest

from services.gateway import signaling as sig

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def test_valid_messages_parse_to_typed_objects():
    assert sig.parse(json.dumps({"type": "hello", "version": 1})) == sig.Hello(1)
    assert sig.parse(json.dumps({"type": "offer", "sdp": OFFER})) == sig.Offer(OFFER)
    assert sig.parse(json.dumps({"type": "text", "text": "  hi there \u0007 "})) == sig.Text("hi there")
    assert sig.parse(json.dumps({"type": "interrupt"})) == sig.InterruptRequest()
    assert sig.parse(json.dumps({"type": "ping", "t": 5})) == sig.Ping(5.0)
    cand = {"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": "0", "sdpMLineIndex": 0}}
    assert isinstance(sig.parse(json.dumps(cand)), sig.Candidate)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"no": "type"}', "bad_message"),
        ('{"type": "rm -rf"}', "unknown_type"),
        ('{"type": "offer"}', "bad_field"),
        ('{"type": "offer", "sdp": 5}', "bad_field"),
        ('{"type": "offer", "sdp": "hello"}', "bad_sdp"),
        ('{"type": "offer", "sdp": "v=0\\r\\nm=video 9"}', "bad_sdp"),
        ('{"type": "text", "text": "   "}', "bad_text"),
        ('{"type": "text", "text": true}', "bad_field"),
        ('{"type": "hello", "version": 7}', "bad_version"),
        ('{"type": "candidate", "candidate": "x"}', "bad_field"),
        ('{"type": "ping", "t": "soon"}', "bad_field"),
    ],
)
def test_bad_messages_are_refused_with_a_code(raw, code):
    with pytest.raises(sig.ClientMessageError) as info:
        sig.parse(raw)
    assert info.value.code == code
    assert str(info.value)


def test_oversized_message_is_refused_before_parsing():
    with pytest.raises(sig.ClientMessageError) as info:
        sig.parse(json.dumps({"type": "text", "text": "x" * (sig.MAX_MESSAGE_BYTES + 1)}))
    assert info.value.code == "too_large"


def test_too_long_text_is_refused():
    with pytest.raises(sig.ClientMessageError, match="longer than"):
        sig.parse(json.dumps({"type": "text", "text": "a" * (sig.MAX_TEXT_CHARS + 1)}))
