"""The silent avatar's pictures on one clock for every session, each rendered once.

Every session's video track used to warp its own idle picture for each of its frames (1.4 ms
of warping plus 0.26 ms of conversion to I420 per 512x512 frame here, measured: about 4 % of a
core per idle session at 25 fps). Nobody sees another session's video, so nothing is lost if
every session shows the same idle picture at the same moment: the picture due at time t is
frame ``(t - t0) / 40 ms`` of the idle motion, whoever asks. The first track to ask for a frame
renders it (off the event loop); the others, whose frames fall in the same 40 ms, await that
same render. With N idle sessions the rendering costs what one did.

Each session still sees smooth motion: its consecutive frames are 40 ms apart, so they map to
consecutive idle frames (a track that skips ahead skips in the idle motion too).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

import numpy as np

from services.media import FRAME_MS
from services.video_convert import rgb_to_i420

FRAME_S = FRAME_MS / 1000
# Renders kept for tracks whose frames are due a little later than the first asker's (their
# anchors differ by up to a frame; a track that fell behind asks for an older one).
KEEP_FRAMES = 8


class IdleFrames:
    def __init__(self, idle_image: Callable[[int], np.ndarray], now: Callable[[], float] = time.monotonic) -> None:
        self._idle_image = idle_image
        self._t0 = now()
        self._renders: collections.OrderedDict[int, asyncio.Future[np.ndarray]] = collections.OrderedDict()
        self.rendered = 0  # how many pictures were rendered (tests count them)

    def index_at(self, t: float) -> int:
        """The idle frame due at time ``t`` (same clock as ``now``)."""
        return int(round((t - self._t0) / FRAME_S))

    async def i420(self, t: float) -> np.ndarray:
        """The idle picture due at ``t`` as I420 (shared, read-only: do not modify)."""
        index = self.index_at(t)
        render = self._renders.get(index)
        if render is None:
            render = asyncio.get_running_loop().run_in_executor(None, self._render, index)
            self._renders[index] = render
            while len(self._renders) > KEEP_FRAMES:
                self._renders.popitem(last=False)
        # One asker's cancellation (its call closed) must not cancel the render for the others.
        return await asyncio.shield(render)

    def _render(self, index: int) -> np.ndarray:
        self.rendered += 1
        picture = rgb_to_i420(self._idle_image(index))
        picture.setflags(write=False)
        return picture
