"""The ``say`` command: validated, rate-limited, token-guarded, and spoken word for word.

The first tests run the real Gateway over a real socket with an in-memory pipeline behind it
(what reaches the TTS stage is checked as decoded off the wire); the last runs the whole
avatar (five processes) and checks the words and the mouth that come back over WebRTC.
"""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from services import messages as m
from services.endpoints import Endpoints
from services.gateway.say import clauses_of
from services.gateway.server import Gateway
from services.gateway.settings import GatewaySettings
from tests.fakes import MemoryTransport

TOKEN = "t0ken-" + "y" * 24
SENTENCE = "Mama bought a blue umbrella, for Bob. Then we went home."


@pytest.fixture
async def gateway():
    transport = MemoryTransport(Endpoints.in_dir("/nonexistent"), hwm=100_000)
    settings = GatewaySettings(
        client_dir=os.path.join(os.path.dirname(__file__), "..", "client"), access_token=TOKEN
    )
    gw = Gateway(settings, transport, lambda i: np.zeros((8, 8, 3), np.uint8))
    control = transport.subscribe(transport.endpoints.control)
    tts = transport.pull(transport.endpoints.tts_in)
    llm = transport.pull(transport.endpoints.llm_in)
    server = TestServer(gw.app(), host="127.0.0.1")
    await server.start_server()
    yield server, tts, llm, control
    await server.close()


async def _session(http: aiohttp.ClientSession, server: TestServer):
    ws = await http.ws_connect(server.make_url("/ws").with_query(token=TOKEN))
    await ws.send_json({"type": "hello", "version": 1})
    while True:
        event = json.loads((await asyncio.wait_for(ws.receive(), 3)).data)
        if event["type"] == "config":
            return ws, event["session"]


def test_text_is_cut_like_an_answer_and_keeps_every_word() -> None:
    parts = clauses_of(SENTENCE)
    assert len(parts) >= 2
    assert " ".join(parts).split() == SENTENCE.split()


async def test_say_over_the_websocket_goes_to_tts_not_the_llm(gateway) -> None:
    server, tts, llm, control = gateway
    async with aiohttp.ClientSession() as http:
        ws, sid = await _session(http, server)
        await ws.send_json({"type": "say", "text": SENTENCE})
        chunks = [await asyncio.wait_for(tts.recv(), 3)]
        while not chunks[-1].final:
            chunks.append(await asyncio.wait_for(tts.recv(), 3))
        assert all(isinstance(c, m.TextChunk) and c.session == sid for c in chunks)
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert " ".join(c.text for c in chunks).split() == SENTENCE.split()
        assert llm.pending() == []  # the LLM is bypassed
        turn = chunks[0].turn
        assert any(isinstance(c, m.Interrupt) and c.turn == turn for c in control.pending())
        # A second say (or a question) is a new turn: the first is cut off (barge-in).
        await ws.send_json({"type": "say", "text": "Stop."})
        again = await asyncio.wait_for(tts.recv(), 3)
        assert again.turn == turn + 1 and again.text == "Stop." and again.final
        # Validated and rate-limited like a typed question (burst of 5).
        await ws.send_json({"type": "say", "text": "   "})
        await ws.send_json({"type": "say", "text": "x" * 501})
        await ws.send_json({"type": "say"})
        for _ in range(5):
            await ws.send_json({"type": "say", "text": "Again."})
        codes = []
        while len(codes) < 4:
            event = json.loads((await asyncio.wait_for(ws.receive(), 3)).data)
            if event["type"] == "error":
                codes.append(event["code"])
        assert codes == ["bad_text", "bad_text", "bad_field", "rate_limited"]
        await ws.close()


async def test_say_over_http_needs_the_token_and_valid_json(gateway) -> None:
    server, tts, _, _ = gateway
    url = server.make_url("/api/say")
    auth = {"Authorization": f"token {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"text": "Hello."}) as r:
            assert r.status == 401
        async with http.post(url, json={"text": "Hello."}, headers=auth) as r:
            assert r.status == 404 and (await r.json())["code"] == "no_session"
        ws, sid = await _session(http, server)
        async with http.post(url, data="text=Hello", headers=auth) as r:
            assert r.status == 415
        async with http.post(url, data="{nope", headers={**auth, "Content-Type": "application/json"}) as r:
            assert r.status == 400 and (await r.json())["code"] == "bad_json"
        async with http.post(url, json={"text": ""}, headers=auth) as r:
            assert r.status == 400 and (await r.json())["code"] == "bad_text"
        async with http.post(url, json={"text": "Hi.", "session": "nobody"}, headers=auth) as r:
            assert r.status == 404
        async with http.post(url, json={"text": "Hi."}, headers={**auth, "Origin": "https://evil.example"}) as r:
            assert r.status == 403
        async with http.post(url, json={"text": SENTENCE, "session": sid}, headers=auth) as r:
            assert r.status == 200
            turns = (await r.json())["turns"]
        chunks = [await asyncio.wait_for(tts.recv(), 3)]
        while not chunks[-1].final:
            chunks.append(await asyncio.wait_for(tts.recv(), 3))
        assert turns == {sid: chunks[0].turn}
        assert " ".join(c.text for c in chunks).split() == SENTENCE.split()
        for _ in range(4):
            async with http.post(url, json={"text": "Hi."}, headers=auth) as r:
                assert r.status == 200
        async with http.post(url, json={"text": "Hi."}, headers=auth) as r:
            assert r.status == 429
        await ws.close()


@pytest.mark.slow
async def test_the_real_avatar_says_the_words_with_a_viseme_mouth(avatar) -> None:
    from tests.rtc_client import RtcClient

    async with RtcClient(avatar.url) as client:
        await client.wait_event(lambda e: e["type"] == "webrtc" and e["state"] == "connected", 30)
        await client.send({"type": "say", "text": SENTENCE})
        await client.wait_event(lambda e: e["type"] == "transcript" and e["role"] == "avatar" and e["final"], 120)
        heard = " ".join(
            e["text"] for e in client.events if e["type"] == "transcript" and e["role"] == "avatar" and e["text"]
        )
        assert heard.split() == SENTENCE.split()
        stats = await client.wait_event(lambda e: e["type"] == "stats", 10)
        assert stats["stages"]["lipsync_mouth"] == "visemes"
        assert not [e for e in client.events if e["type"] == "error"]
