"""The gateway is safe to put on a network: Origin check, a token off localhost, per-session
TURN credentials, limits, and a clear error (never a traceback) for any malformed message."""

import asyncio
import json
import logging
import os
import random
import stat

import aiohttp
import pytest

from services.gateway import turn_credentials
from services.gateway.access import AccessConfigError, is_loopback, resolve_token
from services.gateway.limits import LimitSettings, TokenBucket
from services.gateway.settings import GatewaySettings
from services.gateway.turn_credentials import TurnSettings

TOKEN = "t0ken-" + "x" * 24


async def _events(ws, n: int, timeout: float = 3.0) -> list[dict]:
    out = []
    while len(out) < n:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        out.append(json.loads(msg.data))
    return out


async def _error(ws, timeout: float = 3.0) -> dict:
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        event = json.loads(msg.data)
        if event["type"] == "error":
            return event


# ------------------------------------------------------------------------------------ origin


async def test_cross_origin_websockets_are_refused_and_same_origin_is_not(serve):
    server = await serve(allowed_origins=("https://kiosk.example",))
    url = str(server.make_url("/ws"))
    own = f"http://{server.host}:{server.port}"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers={"Origin": "https://evil.example"})
        assert refused.value.status == 403
        for origin in (own, "https://kiosk.example", None):
            headers = {"Origin": origin} if origin else {}
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.send_json({"type": "hello", "version": 1})
                [config] = await _events(ws, 1)
                assert config["type"] == "config"


# ------------------------------------------------------------------------------------ token


async def test_off_localhost_nothing_opens_without_the_token(serve):
    server = await serve(access_token=TOKEN)
    async with aiohttp.ClientSession() as http:
        for path in ("/ws", "/metrics", "/api/ice-servers"):
            async with http.get(server.make_url(path)) as r:
                assert r.status == 401, path
                assert (await r.json())["code"] == "token_required"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(server.make_url("/ws").with_query(token="wrong" * 6))
        assert refused.value.status == 401
        # The page itself loads (it shows the error), and the printed URL's token works.
        async with http.get(server.make_url("/")) as r:
            assert r.status == 200
        async with http.ws_connect(server.make_url("/ws").with_query(token=TOKEN)) as ws:
            await ws.send_json({"type": "hello", "version": 1})
            assert (await _events(ws, 1))[0]["type"] == "config"
        async with http.get(server.make_url("/metrics"), headers={"Authorization": f"token {TOKEN}"}) as r:
            assert r.status == 200
    # The page keeps the token: loading /?token=... sets a strict, HTTP-only cookie.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as page:  # IP host
        async with page.get(server.make_url("/").with_query(token=TOKEN)) as r:
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        async with page.ws_connect(server.make_url("/ws")) as ws:
            await ws.send_json({"type": "hello", "version": 1})
            assert (await _events(ws, 1))[0]["type"] == "config"


def test_the_token_is_generated_once_kept_private_and_only_off_loopback(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("")
    assert resolve_token("127.0.0.1", {}, str(tmp_path)) == ""
    first = resolve_token("0.0.0.0", {}, str(tmp_path))
    assert len(first) >= 16 and resolve_token("0.0.0.0", {}, str(tmp_path)) == first
    assert stat.S_IMODE(os.stat(tmp_path / "access_token").st_mode) == 0o600
    assert resolve_token("127.0.0.1", {"AVATAR_ACCESS_TOKEN": TOKEN}, str(tmp_path)) == TOKEN
    with pytest.raises(AccessConfigError):
        resolve_token("0.0.0.0", {"AVATAR_ACCESS_TOKEN": "short"}, str(tmp_path))
    settings = GatewaySettings.from_env({"AVATAR_HOST": "0.0.0.0", "AVATAR_CACHE_DIR": str(tmp_path)})
    assert settings.access_token == first


# ------------------------------------------------------------------------------------ TURN


async def test_turn_credentials_are_minted_per_session_and_expire(serve):
    settings = TurnSettings(("turn:relay.example:3478",), "s3cret", 600)
    cred = turn_credentials.mint(settings, "abc", now=1000.0)
    assert cred["username"] == "1600:abc"
    assert turn_credentials.verify(settings, cred["username"], cred["credential"], now=1500.0)
    assert not turn_credentials.verify(settings, cred["username"], cred["credential"], now=1601.0)
    assert not turn_credentials.verify(TurnSettings(settings.urls, "other", 600), cred["username"], cred["credential"], now=1500.0)
    server = await serve(turn=settings)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/ws")) as ws:
            await ws.send_json({"type": "hello", "version": 1})
            [config] = await _events(ws, 1)
    [relay] = [s for s in config["iceServers"] if s.get("username")]
    expiry, _, session = relay["username"].partition(":")
    assert session == config["session"] and int(expiry) > 0
    assert turn_credentials.verify(settings, relay["username"], relay["credential"])


# ------------------------------------------------------------------------------------ limits


async def test_rate_limits_and_address_caps_are_clear_errors(serve):
    server = await serve(limits=LimitSettings(text_burst=2, text_per_min=1, offer_burst=1, offer_per_min=1, sessions_per_address=2))
    url = server.make_url("/ws")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws, http.ws_connect(url) as ws2:
            for _ in range(3):
                await ws.send_json({"type": "text", "text": "hello"})
            error = await _error(ws)
            assert error["code"] == "rate_limited" and "wait" in error["message"]
            bad_offer = {"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}
            await ws2.send_json(bad_offer)
            assert (await _error(ws2))["code"] == "bad_sdp"
            await ws2.send_json(bad_offer)
            assert (await _error(ws2))["code"] == "rate_limited"
            async with http.ws_connect(url) as ws3:  # a third from the same address
                error = await _error(ws3)
                assert error["code"] == "too_many_sessions"
                assert (await ws3.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_a_session_without_media_that_says_nothing_times_out(serve):
    server = await serve(limits=LimitSettings(idle_timeout_s=0.2))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/ws")) as ws:
            error = await _error(ws, timeout=5.0)
            assert error["code"] == "idle_timeout"
            assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


def test_token_bucket_refills():
    t = [0.0]
    bucket = TokenBucket(2, 1.0, lambda: t[0])
    assert bucket.take() and bucket.take() and not bucket.take()
    t[0] = 1.0
    assert bucket.take() and not bucket.take()


# ------------------------------------------------------------------------------------ fuzzing


def _fuzz_messages(rng: random.Random, n: int) -> list[str | bytes]:
    kinds = ["hello", "offer", "candidate", "text", "interrupt", "ping", "nope", "", None, 5]
    values = [None, True, 0, -1, 2**70, 1.5e308, "", "x" * 70_000, [], {}, [[]], {"a": 1}, "v=0",
              "v=0\r\nm=audio 9 RTP 0\r\n", "\x00\x01", "\ud800", "candidate:1 1 udp 1 1.2.3.4 5 typ host"]
    out: list[str | bytes] = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.05:
            out.append("[" * rng.randint(1000, 20000))  # deep nesting (RecursionError before)
        elif roll < 0.10:
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))))
        elif roll < 0.15:
            out.append(json.dumps(rng.choice(values)) if rng.random() < 0.5 else "{" + "x" * rng.randint(0, 40))
        else:
            msg = {"type": rng.choice(kinds)}
            for key in rng.sample(["sdp", "text", "candidate", "t", "version", "sdpMid", "extra"], rng.randint(0, 3)):
                msg[key] = rng.choice(values)
            if rng.random() < 0.2:
                msg["candidate"] = {"candidate": rng.choice(values), "sdpMid": rng.choice(values), "sdpMLineIndex": rng.choice(values)}
            out.append(json.dumps(msg))
    return out


async def test_ten_thousand_fuzzed_messages_cause_no_traceback(serve, caplog):
    # Limits high enough that the messages reach the parser and the handlers, not the limiter.
    server = await serve(limits=LimitSettings(message_burst=100_000, message_per_s=100_000, text_burst=100_000,
                                              text_per_min=1_000_000, offer_burst=20, offer_per_min=1))
    rng = random.Random(13)
    messages = _fuzz_messages(rng, 10_000)
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as http:
        for start in range(0, len(messages), 2500):  # a few connections, as pages would
            async with http.ws_connect(server.make_url("/ws"), max_msg_size=0) as ws:
                reader = asyncio.create_task(_drain(ws))
                for raw in messages[start : start + 2500]:
                    if isinstance(raw, bytes):
                        await ws.send_bytes(raw)
                    else:
                        await ws.send_str(raw)
                await ws.send_json({"type": "hello", "version": 1})
                await asyncio.sleep(0.3)
                await ws.close()
                events = await reader
                assert any(e["type"] == "config" for e in events), "the session survived and answers"
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert tracebacks == [], [r.getMessage() for r in tracebacks[:5]]


async def _drain(ws) -> list[dict]:
    events = []
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            events.append(json.loads(msg.data))
    return events
