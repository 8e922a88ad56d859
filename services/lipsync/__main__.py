"""Entry point: ``python -m services.lipsync``."""

from __future__ import annotations

import asyncio
import sys

from services.cli import service_main
from services.cuda_check import require_cuda
from services.avatar.library import default_avatar, open_store
from services.avatar.store import AvatarStore
from services.lipsync.avatars import SessionEngines
from services.lipsync.engine import LipsyncEngine
from services.lipsync.engines import build_engine
from services.lipsync.service import LipsyncService
from services.lipsync.settings import LipsyncSettings
from services.runner import Ready, ServiceMain
from services.transport import Transport


def serve() -> ServiceMain:
    import cv2

    # One OpenCV thread: its pool would otherwise fight the LLM and TTS for the same few cores.
    cv2.setNumThreads(1)
    settings = LipsyncSettings.from_env()

    async def main(transport: Transport, ready: Ready) -> None:
        store = await asyncio.to_thread(open_store, settings.cache_dir)
        engine = await asyncio.to_thread(build_engine, settings, store)
        engines = await asyncio.to_thread(session_engines, settings, store, engine)
        ep = transport.endpoints
        service = LipsyncService(engines, transport.push(ep.gateway_frames), transport.push(ep.gateway_events))
        inbox, control = transport.pull(ep.lipsync_in), transport.subscribe(ep.control)
        await ready()
        await service.run(inbox, control)

    return main


def session_engines(settings: LipsyncSettings, store: AvatarStore, engine: LipsyncEngine) -> SessionEngines:
    """Per-session avatars from the store, each on the one loaded model (an upload's
    preparation reports its progress)."""
    default = default_avatar(store, settings.avatar)
    return SessionEngines(engine, default.id,
                          lambda avatar, progress: engine.with_avatar(store, store.load(avatar), progress))


def check() -> None:
    build_engine(LipsyncSettings.from_env())


if __name__ == "__main__":
    require_cuda("lipsync")  # first: on the GPU profile, no CUDA = a clear exit before any model loads
    sys.exit(
        service_main(
            "lipsync", "Lip-sync: avatar frames with their audio (animation, Wav2Lip, MuseTalk).",
            check, serve,
        )
    )
