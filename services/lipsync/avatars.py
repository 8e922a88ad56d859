"""Which engine draws each session: the engine's model with the session's avatar.

The model (Wav2Lip's generator, MuseTalk's UNet and VAE) is loaded once; an avatar is the
engine's ``with_avatar(store, prepared)``, which shares the model and adds that avatar's
prepared data from the store (services/avatar/store.py). Sessions on one avatar share one
engine; an avatar no session shows is dropped (the default stays).

An avatar is loaded off the event loop in its own thread when the gateway says a session
chose it (``SessionAvatar``); until it is loaded the session is not scheduled (its voice
waits), so no frame of the wrong face is ever drawn. A load that fails (the avatar was deleted)
leaves the session on the default avatar, and the session is told.

An upload asks for the engine's own preparation before any session shows the avatar
(``PrepareAvatar``, see ``prepare``): it runs in a second thread, so a session switching to an
avatar already prepared never waits behind an upload's preparation, and it shares its future
with a session that chooses the same avatar meanwhile (one preparation per avatar). Its result
is the step kept in the store entry; the engine itself is kept only if a session shows it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from services.lipsync.engine import LipsyncEngine

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (step in words, 0..1), called from the worker thread
Loader = Callable[[str, Progress | None], LipsyncEngine]  # avatar id -> engine (blocking)


def _quiet(step: str, progress: float) -> None:
    pass


class SessionEngines:
    def __init__(self, default: LipsyncEngine, default_id: str = "", load: Loader | None = None) -> None:
        self.default = default
        self.default_id = default_id
        self._load = load
        self._engines: dict[str, LipsyncEngine] = {default_id: default}
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._chosen: dict[str, str] = {}  # session -> avatar id
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="avatar-load")
        # Uploads' preparations: their own thread, so sessions' loads never queue behind them.
        self._prepare_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="avatar-prepare")
        self.progress: dict[str, tuple[str, float]] = {}  # avatar -> latest (step, 0..1) of a preparation

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
        try:
            await self._loaded(avatar, self._pool, None)
        except Exception as exc:  # deleted, damaged, an engine step that failed
            logger.warning("avatar %s could not be loaded: %s", avatar, exc)
            if self._chosen.get(session) == avatar:
                self._chosen.pop(session, None)
            return f"that avatar could not be loaded ({exc}); showing the default one"
        return None

    async def prepare(self, avatar: str) -> None:
        """Run the engine's own preparation of ``avatar`` (kept in its store entry); progress in
        ``self.progress[avatar]`` meanwhile. Raises what the preparation raised."""
        if self._load is None or avatar in self._engines:
            return
        self.progress.setdefault(avatar, ("starting", 0.0))

        def report(step: str, fraction: float) -> None:
            self.progress[avatar] = (step, min(1.0, max(0.0, float(fraction))))

        try:
            await self._loaded(avatar, self._prepare_pool, report)
        finally:
            self.progress.pop(avatar, None)

    async def _loaded(self, avatar: str, pool: concurrent.futures.Executor, report: Progress | None) -> None:
        """The engine of ``avatar`` built once (a load in flight is shared), and kept while a
        session shows it."""
        future = self._loading.get(avatar)
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(pool, self._load, avatar, report or _quiet)
            self._loading[avatar] = future
            future.add_done_callback(lambda f: self._loading.pop(avatar) if self._loading.get(avatar) is f else None)
        engine = await asyncio.shield(future)
        if avatar not in self._engines and any(a == avatar for a in self._chosen.values()):
            self._engines[avatar] = engine
            logger.info("avatar %s loaded for lip-sync (%d avatars in use)", avatar, len(self._engines))

    def close(self, session: str) -> None:
        self._chosen.pop(session, None)
        self._prune()

    def _prune(self) -> None:
        used = set(self._chosen.values()) | {self.default_id}
        for avatar in [a for a in self._engines if a not in used]:
            del self._engines[avatar]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._prepare_pool.shutdown(wait=False, cancel_futures=True)
