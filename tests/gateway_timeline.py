"""A scripted timeline on the real Gateway: fake stages on an in-memory transport, a virtual
clock, and a fake track that plays each unit when it is due. Time only moves when a test moves
it, so a test reads like a spec and never flakes. ``tests/conftest.py`` makes it the ``timeline``
fixture (one session, "s1"); ``PageSocket`` and ``settle`` serve other gateway tests too.
"""

import asyncio
import json

import numpy as np

from services import messages as m
from services.endpoints import Endpoints
from services.gateway.media_clock import SessionMedia
from services.gateway.server import Gateway
from services.gateway.session import Session
from services.gateway.settings import GatewaySettings
from services.media import SAMPLES_PER_VIDEO_FRAME
from tests.fakes import MemoryTransport, VirtualClock

FRAME_S = 0.04
CLAUSES = ["Once upon a time,", "there was a brave knight.", "He rode out to find the dragon."]
FRAMES_PER_CLAUSE = 25  # one second each


class PageSocket:
    """What the Session writes to: the page's side of the WebSocket."""

    closed = False

    def __init__(self) -> None:
        self.events: list[dict] = []

    async def send_str(self, text: str) -> None:
        self.events.append(json.loads(text))


async def settle() -> None:
    # Let every hop (sockets, loops, queues) run; no threads are involved, so this is exact.
    for _ in range(30):
        await asyncio.sleep(0)


class Timeline:
    def __init__(self) -> None:
        self.clock = VirtualClock()
        ep = Endpoints.in_dir("/nonexistent")
        self.transport = MemoryTransport(ep)
        self.control = self.transport.subscribe(ep.control)
        self.gateway = Gateway(GatewaySettings(), self.transport, lambda i: np.zeros((8, 8, 3), np.uint8))
        self.frames_out = self.transport.push(ep.gateway_frames)
        self.events_out = self.transport.push(ep.gateway_events)
        self.page = PageSocket()
        media = SessionMedia(
            5, clock=self.clock,
            on_unit=lambda unit: self.gateway.turns.unit_played(self.session, unit),
        )
        self.session = Session("s1", self.page, media)
        self.session.has_media = lambda: True  # the fake track below plays it
        self.gateway.sessions["s1"] = self.session
        # The fake lip-sync's view of the control channel: it renders only within its credit.
        self.lipsync_control = self.transport.subscribe(ep.control)
        self.credit = {"received": 0, "room": 0, "sent": 0}
        self.played: list[tuple[float, m.AvatarFrame]] = []
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        await self.gateway._start_background(None)
        self.tasks.append(asyncio.create_task(self._play()))

    async def _play(self) -> None:
        # The audio/video track: asks the clock for unit i when it is due.
        i = 0
        while True:
            i = await self.session.media.pace(i, FRAME_S)
            self.played.append((self.clock.now(), self.session.media.unit(i)))
            i += 1

    def answer(self, turn: int, clauses: list[str]) -> asyncio.Task:
        """A lip-sync stage streaming one answer's frames as fast as its flow credit allows."""

        async def wait_for_credit() -> None:
            credit = self.credit
            while credit["sent"] >= credit["received"] + credit["room"]:
                msg = await self.lipsync_control.recv()
                if isinstance(msg, m.FlowCredit) and msg.session == "s1":
                    credit["received"], credit["room"] = msg.received, msg.room

        async def stream() -> None:
            index = 0
            for c, text in enumerate(clauses):
                for k in range(FRAMES_PER_CLAUSE):
                    await wait_for_credit()
                    self.credit["sent"] += 1
                    last = c == len(clauses) - 1 and k == FRAMES_PER_CLAUSE - 1
                    audio = np.full(SAMPLES_PER_VIDEO_FRAME, 1000 + turn, np.int16)
                    await self.frames_out.send(m.AvatarFrame(
                        "s1", turn, index, np.full((8, 8, 3), 200, np.uint8), audio,
                        text if k == 0 else "", last,
                    ))
                    index += 1

        task = asyncio.create_task(stream())
        self.tasks.append(task)
        return task

    async def event(self, msg: object) -> None:
        await self.events_out.send(msg)
        await settle()

    async def run_until(self, t: float) -> None:
        while self.clock.now() < t - 1e-9:
            await self.clock.advance(0.02)
            await settle()

    def page_events(self, kind: str) -> list[dict]:
        return [e for e in self.page.events if e["type"] == kind]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.gateway._shutdown(None)
