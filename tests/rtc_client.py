"""A Python WebRTC client (aiortc) that speaks the page's WebSocket protocol, for tests that
need real media without a browser."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from fractions import Fraction

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

KEPT_FRAMES = 400  # 16 s of video


class PcmTrack(MediaStreamTrack):
    """Plays int16 48 kHz mono audio (then silence) in real time, 20 ms per frame."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, np.int16)
        self._n = 0
        self._t0: float | None = None

    def play(self, pcm48k: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, pcm48k.astype(np.int16)])

    async def recv(self) -> av.AudioFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        delay = self._t0 + self._n * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = np.zeros(960, np.int16)
        take = self._pending[:960]
        chunk[: len(take)] = take
        self._pending = self._pending[960:]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._n * 960
        frame.time_base = Fraction(1, 48000)
        self._n += 1
        return frame


class RtcClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.events: list[dict] = []
        self.arrivals: list[float] = []  # when each of ``events`` arrived (monotonic)
        self.mic = PcmTrack()
        self.video_times: list[float] = []  # every received frame's arrival
        # The last frames as decoded, converted to RGB only when a test looks at them: 2.5 ms of
        # conversion per frame on the event loop would slow the clients (and so the avatar on
        # the same cores) in the benchmarks that only count frames.
        self._kept_video: collections.deque[tuple[float, av.VideoFrame]] = collections.deque(maxlen=KEPT_FRAMES)
        self.audio_levels: list[tuple[float, float]] = []  # (monotonic time, peak)
        self._tasks: list[asyncio.Task] = []
        self._changed = asyncio.Event()

    async def __aenter__(self) -> "RtcClient":
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(self.base_url.replace("http", "ws") + "/ws")
        self._tasks.append(asyncio.create_task(self._read_ws()))
        await self.ws.send_json({"type": "hello", "version": 1})
        await self.wait_event(lambda e: e["type"] == "config")
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(self.mic)
        self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track) -> None:  # noqa: ANN001
            self._tasks.append(asyncio.create_task(self._consume(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.ws.send_json({"type": "offer", "sdp": self.pc.localDescription.sdp})
        answer = await self.wait_event(lambda e: e["type"] == "answer")
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        await self.ws.close()
        await self.http.close()

    async def _read_ws(self) -> None:
        async for msg in self.ws:
            self.arrivals.append(time.monotonic())
            self.events.append(json.loads(msg.data))
            self._changed.set()

    async def _consume(self, track) -> None:  # noqa: ANN001
        while True:
            frame = await track.recv()
            now = time.monotonic()
            if track.kind == "video":
                self._kept_video.append((now, frame))
                self.video_times.append(now)
            else:
                self.audio_levels.append((now, float(np.abs(frame.to_ndarray()).max())))

    @property
    def video_frames(self) -> list[np.ndarray]:
        """The last KEPT_FRAMES received pictures, RGB."""
        return [frame.to_ndarray(format="rgb24") for _, frame in list(self._kept_video)]

    def video_frames_between(self, start: float, end: float) -> list[np.ndarray]:
        """The kept RGB pictures that arrived within [start, end] (monotonic)."""
        return [f.to_ndarray(format="rgb24") for t, f in list(self._kept_video) if start <= t <= end]

    async def wait_event(self, pred, timeout_s: float = 30.0, start: int = 0) -> dict:
        """The first event from ``self.events[start:]`` that ``pred`` accepts, waiting for it."""
        deadline = time.monotonic() + timeout_s
        seen = start
        while True:
            for event in self.events[seen:]:
                if pred(event):
                    return event
            seen = len(self.events)
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"event not seen; got {[e.get('type') for e in self.events][-30:]}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def send(self, payload: dict) -> None:
        await self.ws.send_json(payload)
