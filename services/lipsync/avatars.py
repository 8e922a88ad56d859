"""Which engine draws each session: the engine's model with the session's avatar.

The model (Wav2Lip's generator, MuseTalk's UNet and VAE) is loaded once; an avatar is the
engine's ``with_avatar(store, prepared)``, which shares the model and adds that avatar's
prepared data from the store (services/avatar/store.py). Sessions on one avatar share one
engine; an avatar no session shows is dropped (the default stays).

An avatar is loaded off the event loop in its own thread when the gateway says a session
chose it (``SessionAvatar``); until it is loaded the session is not scheduled (its voice
waits), so no frame of the wrong face is ever drawn. A load that fails (the avatar was deleted)
leaves the session on the default avatar, and the session is told.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from services.lipsync.engine import LipsyncEngine

logger = logging.getLogger(__name__)

Loader = Callable[[str], LipsyncEngine]  # avatar id -> engine (blocking)


class SessionEngines:
    def __init__(self, default: LipsyncEngine, default_id: str = "", load: Loader | None = None) -> None:
        self.default = default
        self.default_id = default_id
        self._load = load
        self._engines: dict[str, LipsyncEngine] = {default_id: default}
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._chosen: dict[str, str] = {}  # session -> avatar id
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="avatar-load")

    def engine(self, session: str) -> LipsyncEngine:
        return self._engines.get(self._chosen.get(session, self.default_id), self.default)

    def ready(self, session: str) -> bool:
        return self._chosen.get(session, self.default_id) in self._engines

    def avatar_of(self, session: str) -> str:
        return self._chosen.get(session, self.default_id)

    async def choose(self, session: str, avatar: str) -> str | None:
        """Switch ``session`` to ``avatar``; returns an error for the person, or None."""
        if self._load is None or avatar == self._chosen.get(session, self.default_id):
            return None
        self._chosen[session] = avatar
        self._prune()
        if avatar in self._engines:
            return None
        future = self._loading.get(avatar)
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(self._pool, self._load, avatar)
            self._loading[avatar] = future
        try:
            engine = await asyncio.shield(future)
        except Exception as exc:  # deleted, damaged, an engine step that failed
            logger.warning("avatar %s could not be loaded: %s", avatar, exc)
            if self._chosen.get(session) == avatar:
                self._chosen.pop(session, None)
            return f"that avatar could not be loaded ({exc}); showing the default one"
        finally:
            self._loading.pop(avatar, None)
        if any(a == avatar for a in self._chosen.values()):
            self._engines[avatar] = engine
            logger.info("avatar %s loaded for lip-sync (%d avatars in use)", avatar, len(self._engines))
        return None

    def close(self, session: str) -> None:
        self._chosen.pop(session, None)
        self._prune()

    def _prune(self) -> None:
        used = set(self._chosen.values()) | {self.default_id}
        for avatar in [a for a in self._engines if a not in used]:
            del self._engines[avatar]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
