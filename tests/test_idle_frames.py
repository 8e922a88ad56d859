"""The gateway's shared idle pictures (services/gateway/idle_frames.py): sessions whose frames
fall due at different phases share one render per 40 ms, each session's pictures follow the
idle motion frame by frame, concurrent askers await one render, and one asker's cancellation
does not cancel the render for the others."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from services.gateway.idle_frames import FRAME_S, IdleFrames
from services.video_convert import rgb_to_i420


def picture(index: int) -> np.ndarray:
    """An RGB frame that says which idle frame it is (its first pixel's red)."""
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[..., 0] = index % 256
    return image


def test_sessions_at_any_phase_share_one_render_per_frame_and_see_consecutive_frames():
    async def run() -> tuple[IdleFrames, list[list[int]]]:
        idle = IdleFrames(picture, now=lambda: 100.0)
        seen: list[list[int]] = [[], [], []]
        # Three sessions whose anchors are 0, 0.3 and 0.8 of a frame apart, 50 frames each,
        # asking in time order as their tracks would.
        phases = [0.0, 0.3, 0.8]
        asks = sorted((100.0 + (k + phase) * FRAME_S, s) for s, phase in enumerate(phases) for k in range(50))
        for t, s in asks:
            seen[s].append(idle.index_at(t))
            await idle.i420(t)
        return idle, seen

    idle, seen = asyncio.run(run())
    for indices in seen:
        assert np.all(np.diff(indices) == 1)  # each session's idle motion goes frame by frame
    distinct = len(set().union(*map(set, seen)))
    assert idle.rendered == distinct <= 51  # 150 frames shown, about 50 rendered


def test_concurrent_askers_await_one_render_and_a_cancelled_one_does_not_stop_it():
    release = threading.Event()
    calls: list[int] = []

    def slow_picture(index: int) -> np.ndarray:
        calls.append(index)
        release.wait(5)
        return picture(index)

    async def run() -> list[np.ndarray]:
        idle = IdleFrames(slow_picture, now=lambda: 0.0)
        first = asyncio.create_task(idle.i420(0.4))
        second = asyncio.create_task(idle.i420(0.41))  # the same 40 ms
        await asyncio.sleep(0.05)
        first.cancel()
        release.set()
        got = await second
        assert first.cancelled()
        return [got, await idle.i420(0.4)]

    got, again = asyncio.run(run())
    assert calls == [10]  # one render of idle frame 10 for both askers and the later one
    assert np.array_equal(got, rgb_to_i420(picture(10))) and again is got
    assert not got.flags.writeable  # shared between sessions: nobody may draw on it
