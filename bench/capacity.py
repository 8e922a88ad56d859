"""Capacity: how many concurrent sessions this machine holds at 25 fps delivered.

For n = 1, 2, ... sessions, n WebRTC clients (aiortc, tests/rtc_client.py: lighter than n
browsers, though they still decode the video on the same CPU, so the figure is a floor) connect
at once and each asks a question by text, so every session is answering while measured. Over a
window, each client's received video fps is counted, and the gateway's /metrics gives late
(skipped) frames. A level passes when every session receives >= 24 fps and no frame was late.
"""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import AsyncExitStack

import aiohttp

QUESTION = "Tell me a long story about the sea."
MIN_FPS = 24.0


async def _late_frames(base_url: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url + "/metrics") as resp:
            text = await resp.text()
    m = re.search(r'^avatar_frames_total\{kind="late"\} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def measure_level(base_url: str, sessions: int, window_s: float) -> dict:
    from tests.rtc_client import RtcClient

    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(RtcClient(base_url)) for _ in range(sessions)]
        for c in clients:
            await c.wait_event(lambda e: e.get("type") == "webrtc" and e.get("state") == "connected", 30)
        for c in clients:
            await c.send({"type": "text", "text": QUESTION})
        # Wait until every session is answering, then measure.
        for c in clients:
            await c.wait_event(lambda e: e.get("type") == "state" and e.get("state") == "speaking", 60)
        late0 = await _late_frames(base_url)
        t0 = time.monotonic()
        counts0 = [len(c.video_times) for c in clients]
        await asyncio.sleep(window_s)
        elapsed = time.monotonic() - t0
        fps = [(len(c.video_times) - n0) / elapsed for c, n0 in zip(clients, counts0)]
        late = await _late_frames(base_url) - late0
    return {"sessions": sessions, "fps_min": round(min(fps), 1), "fps_mean": round(sum(fps) / len(fps), 1),
            "late_frames": late, "ok": min(fps) >= MIN_FPS and late == 0}


def run(base_url: str, max_sessions: int, window_s: float) -> dict:
    levels = []
    for n in range(1, max_sessions + 1):
        level = asyncio.run(measure_level(base_url, n, window_s))
        levels.append(level)
        print(f"capacity: {n} session(s): min {level['fps_min']} fps, late frames {level['late_frames']:.0f}"
              f" -> {'ok' if level['ok'] else 'below 25 fps'}", flush=True)
        if not level["ok"]:
            break
        time.sleep(2)  # let the previous sessions' answers drain
    held = max((lv["sessions"] for lv in levels if lv["ok"]), default=0)
    return {"levels": levels, "sessions_at_25fps": held, "window_s": window_s,
            "searched_up_to": max_sessions, "method": __doc__.strip().splitlines()[0]}
