"""Several sessions at once on the real Gateway and the real lip-sync scheduler, with fake
tracks on a virtual clock: nobody waits for anybody.

Sessions "a" and "b" have calls whose tracks play; "stalled" has a call whose viewer stopped
draining (its queue fills and stays full); "ws" never made a call. All four get an answer at
the same moment. The test checks that a and b both start within a frame or two and then play
every frame of their answers without a gap, that ws gets its whole answer as text at once,
and that neither stalled nor ws holds up anything.
"""

import asyncio

import numpy as np
import pytest

from services import messages as m
from services.endpoints import Endpoints
from services.gateway.flow import FlowControl
from services.gateway.media_clock import SessionMedia
from services.gateway.server import Gateway
from services.gateway.session import Session
from services.gateway.settings import GatewaySettings
from services.lipsync.service import LipsyncService
from tests.fakes import FakeLipsync, MemoryTransport, VirtualClock
from tests.gateway_timeline import PageSocket

FRAME_S = 0.04
ANSWER_S = 3.0
QUEUE_UNITS = 5


class _Room:
    def __init__(self) -> None:
        self.clock = VirtualClock()
        ep = Endpoints.in_dir("/nonexistent")
        self.transport = MemoryTransport(ep, hwm=1000)
        idle = lambda i: np.zeros((8, 8, 3), np.uint8)  # noqa: E731
        self.gateway = Gateway(GatewaySettings(), self.transport, idle)
        self.lipsync = LipsyncService(FakeLipsync(), self.transport.push(ep.gateway_frames), self.transport.push(ep.gateway_events))
        self.speech = self.transport.push(ep.lipsync_in)
        self.pages: dict[str, PageSocket] = {}
        self.played: dict[str, list[tuple[float, object]]] = {}
        self.tasks: list[asyncio.Task] = []
        for sid, media in (("a", True), ("b", True), ("stalled", True), ("ws", False)):
            page = PageSocket()
            session_media = SessionMedia(QUEUE_UNITS, clock=self.clock,
                                         on_unit=lambda unit, sid=sid: self.gateway.turns.unit_played(self.gateway.sessions[sid], unit))
            session = Session(sid, page, session_media)
            session.has_media = (lambda: True) if media else (lambda: False)
            session.turn = 1
            self.gateway.sessions[sid] = session
            self.pages[sid] = page

    async def start(self) -> None:
        ep = self.transport.endpoints
        await self.gateway._start_background(None)
        self.tasks.append(asyncio.create_task(
            self.lipsync.run(self.transport.pull(ep.lipsync_in), self.transport.subscribe(ep.control))
        ))
        for sid in ("a", "b"):  # "stalled" has no track pulling: its viewer froze
            self.played[sid] = []
            self.tasks.append(asyncio.create_task(self._play(sid)))
        await self.settle()

    async def _play(self, sid: str) -> None:
        media = self.gateway.sessions[sid].media
        i = 0
        while True:
            i = await media.pace(i, FRAME_S)
            self.played[sid].append((self.clock.now(), media.unit(i)))
            i += 1

    async def settle(self) -> None:
        # The lip-sync scheduler renders in a worker thread, so let real time pass too.
        for _ in range(4):
            await asyncio.sleep(0.002)
            for _ in range(20):
                await asyncio.sleep(0)

    async def run_until(self, t: float) -> None:
        while self.clock.now() < t - 1e-9:
            await self.clock.advance(0.02)
            await self.settle()

    def talking(self, sid: str) -> list[tuple[float, object]]:
        return [(t, u) for t, u in self.played[sid] if not u.idle]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.gateway._shutdown(None)


@pytest.fixture
async def room():
    r = _Room()
    await r.start()
    yield r
    await r.close()


async def test_sessions_talking_at_once_never_wait_for_each_other(room):
    t_answer = room.clock.now()
    pcm = np.full(int(16000 * ANSWER_S), 1000, np.int16)
    for sid in ("a", "b", "stalled", "ws"):
        await room.speech.send(m.SpeechAudio(sid, 1, 0, f"Answer for {sid}.", pcm, False))
        await room.speech.send(m.SpeechAudio(sid, 1, 1, "", pcm[:0], True))
    await room.settle()

    # The page that never made a call has its whole answer, as text, before any frame plays.
    ws_text = [e for e in room.pages["ws"].events if e["type"] == "transcript" and e["role"] == "avatar"]
    assert [e["text"] for e in ws_text] == ["Answer for ws.", ""] and ws_text[-1]["final"]

    await room.run_until(t_answer + ANSWER_S + 1.0)
    n_frames = int(ANSWER_S / FRAME_S)
    for sid in ("a", "b"):
        talking = room.talking(sid)
        # First frame within two frame periods of the answer, for both sessions at once.
        assert talking and talking[0][0] - t_answer <= 2 * FRAME_S + 1e-9, (sid, talking[:1])
        # Every frame of the answer (its last one carries the end), back to back: no idle gap.
        assert len(talking) == n_frames, (sid, len(talking))
        times = [t for t, _ in talking]
        assert max(b - a for a, b in zip(times, times[1:])) <= FRAME_S + 1e-9
        assert talking[-1][1].final
        assert room.gateway.sessions[sid].state == "listening"

    # The stalled session holds exactly its queue's worth, and was never given more.
    stalled = room.gateway.sessions["stalled"]
    assert stalled.media.queued() == QUEUE_UNITS and stalled.frames_received == QUEUE_UNITS
    assert max(room.lipsync.batches) >= 2  # frames of several sessions shared engine calls


async def test_credit_follows_the_queue_and_media(room):
    session = room.gateway.sessions["a"]
    credits = FlowControl(room.gateway._control, lambda: [session], lambda s: None, now=room.clock.now)
    [first] = credits.credits()
    assert (first.received, first.room, first.media) == (0, QUEUE_UNITS, True)
    assert credits.credits() == []  # unchanged: nothing to send
    session.frames_received += 2  # two frames arrived and are queued: same window
    for i in range(2):
        session.media.offer(_unit(i))
    assert credits.credits() == []
    session.has_media = lambda: False
    [lost] = credits.credits()
    assert lost.media is False and lost.room == 0
    await room.clock.advance(FlowControl.REFRESH_S)
    assert len(credits.credits()) == 1  # refreshed even when unchanged


def _unit(i: int):
    from services.gateway.media_clock import OutputUnit

    return OutputUnit(i, np.zeros(640, np.int16), np.zeros((8, 8, 3), np.uint8), 1, "", False, idle=False)
