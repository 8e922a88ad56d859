"""The real thing on loopback: main.py's five processes over ZeroMQ, a WebSocket, and WebRTC
media received by an aiortc client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
import numpy as np
import psutil
import pytest

from bench.avatar_process import AvatarProcess
from tests.rtc_client import RtcClient

pytestmark = pytest.mark.slow


async def test_typed_question_gets_a_spoken_lip_synced_answer(avatar):
    async with RtcClient(avatar.url) as client:
        await client.wait_event(lambda e: e["type"] == "webrtc" and e["state"] == "connected", 30)
        # Idle frames flow before anyone speaks: never a black or frozen picture.
        await asyncio.sleep(1.5)
        assert len(client.video_frames) >= 10
        idle = client.video_frames[-10:]
        assert min(f.mean() for f in idle) > 20
        sent_at = time.monotonic()
        await client.send({"type": "text", "text": "Hello! What is your name?"})
        await client.wait_event(lambda e: e["type"] == "transcript" and e["role"] == "user" and e["final"])
        clause = await client.wait_event(lambda e: e["type"] == "transcript" and e["role"] == "avatar" and e["text"], 90)
        assert clause["text"].strip()
        await client.wait_event(lambda e: e["type"] == "transcript" and e["role"] == "avatar" and e["final"], 120)
        stats = await client.wait_event(lambda e: e["type"] == "stats", 10)
        assert stats["stages"]["first_audio_ms"] > 0
        # The state change is the WebSocket message after the stats: wait for it, do not race it
        # (a stats event can be handled before the next message is read).
        after_stats = next(i for i, e in enumerate(client.events) if e is stats) + 1
        await client.wait_event(lambda e: e["type"] == "state" and e["state"] == "listening", 10, start=after_stats)
        states = [e["state"] for e in client.events if e["type"] == "state"]
        assert "thinking" in states and "speaking" in states and states[-1] == "listening"
        await asyncio.sleep(0.5)
        loud = [t for t, peak in client.audio_levels if peak > 500 and t > sent_at]
        assert loud, "the avatar's voice never reached the client"
        # The picture changes while the avatar talks (the mouth moves).
        talking = client.video_frames_between(loud[0], loud[-1])
        assert len(talking) >= 5
        diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(talking, talking[1:])]
        assert max(diffs) > 0.1


async def test_bad_messages_get_clear_errors_and_the_session_survives(avatar):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(avatar.url.replace("http", "ws") + "/ws") as ws:
            await ws.send_str("{not json")
            await ws.send_json({"type": "launch_missiles"})
            await ws.send_json({"type": "offer", "sdp": "v=0\r\nm=audio 1 RTP/AVP 0\r\nthis is not sdp"})
            await ws.send_str(json.dumps({"type": "text", "text": "x" * 70000}))
            await ws.send_json({"type": "ping", "t": 42})
            codes, pong = [], False
            while not pong:
                msg = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
                if msg["type"] == "error":
                    codes.append(msg["code"])
                    assert msg["message"]
                pong = msg["type"] == "pong"
            assert codes == ["bad_json", "unknown_type", "bad_sdp", "too_large"]
        # A client that vanished did not take the server down.
        async with http.get(avatar.url + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(avatar.url + "/metrics") as resp:
            body = await resp.text()
            assert "avatar_client_errors_total" in body and "avatar_stage_latency_ms" in body


async def test_pages_and_headers(avatar):
    async with aiohttp.ClientSession() as http:
        async with http.get(avatar.url + "/") as resp:
            assert resp.status == 200 and "<video" in await resp.text()
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(avatar.url + "/../main.py") as resp:
            assert resp.status in (403, 404)


def _children(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _services(pid: int, name: str = "services.") -> list[psutil.Process]:
    """The children whose command line names a service. A short-lived helper a service starts
    (a child that exits between listing and reading its command line) is not one."""
    found = []
    for child in _children(pid):
        try:
            if name in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_dead_service_is_restarted(avatar):
    tts = _services(avatar.proc.pid, "services.tts")
    assert len(tts) == 1
    mark = len(avatar.lines)
    os.kill(tts[0].pid, signal.SIGKILL)
    avatar.wait_for_line("tts exited with code", 20, start=mark)
    avatar.wait_for_line("tts is ready", 120, start=mark)
    new = _services(avatar.proc.pid, "services.tts")
    assert len(new) == 1 and new[0].pid != tts[0].pid


def test_ctrl_c_stops_everything_without_orphans():
    proc = AvatarProcess()
    try:
        proc.wait_ready()
        children = _services(proc.proc.pid)
        assert len(children) == 5
    finally:
        code = proc.stop()
    assert code == 0, proc.log_tail()
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert "all services stopped" in proc.log_tail()
