"""The gateway's view of the avatar library: which avatar each session shows, the idle
pictures of each avatar in use, and what the avatars of the calls cost in memory.

Idle pictures are per avatar, not per session: sessions on one avatar share one ``IdleFrames``
(one render per 40 ms whoever asks). An avatar's idle animation is loaded from the store on its
first idle frame (in the executor, off the event loop) and dropped when no session uses it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from services.avatar.errors import AvatarError
from services.avatar.idle import IdleAvatar
from services.avatar.store import AvatarInfo, AvatarStore
from services.gateway.idle_frames import IdleFrames

logger = logging.getLogger(__name__)


def avatar_memory_bytes(info: AvatarInfo, engine: str) -> int:
    """What one prepared avatar holds while a call shows it, in the lip-sync stage and here."""
    pixels = info.width * info.height
    frames = info.frames * pixels * 3
    idle = 16 * pixels if engine == "animation" or info.frames == 1 else 0  # the animation's fields
    engine_extra = {
        "animation": idle,
        "wav2lip": frames + info.frames * 96 * 96 * 3,  # BGR copy of the loop + crops
        "musetalk": info.frames * (8 * 32 * 32 * 4 + 256 * 256) + frames,  # latents, masks, frames
    }.get(engine, 0)
    return frames + idle + engine_extra


@dataclass(frozen=True, slots=True)
class CallBudget:
    max_bytes: int

    def refusal(self, wanted: str, in_calls: Iterable[str], info: Callable[[str], AvatarInfo], engine: str) -> str | None:
        """Why a call on ``wanted`` cannot start while ``in_calls`` avatars are shown, or None."""
        shown = set(in_calls)
        if wanted in shown:
            return None  # shared with a call already up: no more memory
        used = sum(avatar_memory_bytes(info(a), engine) for a in shown)
        need = avatar_memory_bytes(info(wanted), engine)
        if used + need <= self.max_bytes:
            return None
        return (f"the avatar is busy: the faces of the calls now running use {used / 2**20:.0f} MB and this one "
                f"needs {need / 2**20:.0f} MB more (limit {self.max_bytes / 2**20:.0f} MB); try the same face as "
                "another call, or wait")


class AvatarLibrary:
    def __init__(self, store: AvatarStore, engine: str, default_id: str, budget: CallBudget,
                 default_idle: Callable[[int], np.ndarray] | None = None) -> None:
        self.store = store
        self.engine = engine
        self.default_id = default_id
        self.budget = budget
        self._idles: dict[str, IdleFrames] = {}
        self._loaded: dict[str, IdleAvatar] = {}
        self._lock = threading.Lock()
        if default_idle is not None:
            self._idles[default_id] = IdleFrames(default_idle)

    def idle_frames(self, avatar_id: str) -> IdleFrames:
        frames = self._idles.get(avatar_id)
        if frames is None:
            frames = self._idles[avatar_id] = IdleFrames(lambda i, a=avatar_id: self._idle(a).idle_frame(i))
        return frames

    def _idle(self, avatar_id: str) -> IdleAvatar:
        """Worker thread: the avatar's idle animation, loaded once."""
        with self._lock:
            idle = self._loaded.get(avatar_id)
            if idle is None:
                try:
                    prepared = self.store.load(avatar_id)
                except AvatarError as exc:  # deleted meanwhile: show the default face
                    logger.warning("avatar %s: %s; idle frames of the default", avatar_id, exc)
                    prepared = self.store.load(self.default_id)
                idle = IdleAvatar.for_engine(prepared.loop, self.engine, prepared.geometry)
                self._loaded[avatar_id] = idle
            return idle

    def prune(self, in_use: Iterable[str]) -> None:
        """Forget the idle pictures of avatars no session shows."""
        keep = set(in_use) | {self.default_id}
        for avatar_id in [a for a in self._idles if a not in keep]:
            del self._idles[avatar_id]
            with self._lock:
                self._loaded.pop(avatar_id, None)

    def resolve(self, wanted: str) -> tuple[str, str | None]:
        """The avatar a session asking for ``wanted`` gets, and why not ``wanted`` if it cannot."""
        if not wanted or wanted == self.default_id:
            return self.default_id, None
        if self.store.has(wanted):
            return wanted, None
        return self.default_id, "that avatar is not in the library (deleted, or still being prepared)"

    def call_refusal(self, wanted: str, in_calls: Iterable[str]) -> str | None:
        try:
            return self.budget.refusal(wanted, in_calls, self.store.info, self.engine)
        except AvatarError as exc:
            return str(exc)
