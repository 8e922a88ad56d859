"""Admission: past the calls the box can hold at 25 fps, a new call gets a clear "busy"; the
admitted calls are untouched and typing still works for everyone."""

import json

import numpy as np

from services.endpoints import Endpoints
from services.gateway.media_clock import SessionMedia
from services.gateway.server import Gateway
from services.gateway.session import Session
from services.gateway.settings import DEFAULT_MAX_CALLS, GatewaySettings
from tests.fakes import MemoryTransport
from tests.gateway_timeline import PageSocket

OFFER = json.dumps({"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"})


class _Call:
    connectionState = "connected"

    async def close(self) -> None:
        pass


def _session(gateway: Gateway, sid: str) -> tuple[Session, PageSocket]:
    page = PageSocket()
    session = Session(sid, page, SessionMedia(5))
    gateway.sessions[sid] = session
    return session, page


async def _settle(session: Session) -> None:
    await session.flush_events()


async def test_a_call_past_the_limit_is_busy_and_typing_still_works():
    transport = MemoryTransport(Endpoints.in_dir("/nonexistent"), hwm=1000)
    gateway = Gateway(GatewaySettings(max_calls=2), transport, lambda i: np.zeros((8, 8, 3), np.uint8))
    for sid in ("a", "b"):
        session, _ = _session(gateway, sid)
        session.pc = _Call()  # two calls already up
    late, page = _session(gateway, "late")
    await gateway._on_client_message(late, OFFER)
    await gateway._on_client_message(late, json.dumps({"type": "text", "text": "hello"}))
    await _settle(late)
    [busy] = [e for e in page.events if e["type"] == "error"]
    assert busy["code"] == "busy" and "typed questions still work" in busy["message"]
    assert late.pc is None
    assert gateway.sessions["a"].pc is not None and gateway.sessions["b"].pc is not None
    assert any(e["type"] == "transcript" and e["text"] == "hello" for e in page.events)
    for session in gateway.sessions.values():
        await session.close()


def test_the_default_limit_depends_on_the_profile_and_is_configurable():
    assert GatewaySettings.from_env({"AVATAR_CACHE_DIR": "/tmp/x"}).max_calls == DEFAULT_MAX_CALLS["cpu"]
    assert GatewaySettings.from_env({"AVATAR_PROFILE": "gpu", "AVATAR_CACHE_DIR": "/tmp/x"}).max_calls == DEFAULT_MAX_CALLS["gpu"]
    assert GatewaySettings.from_env({"AVATAR_MAX_CALLS": "5", "AVATAR_CACHE_DIR": "/tmp/x"}).max_calls == 5
