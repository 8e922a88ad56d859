"""Entry point: ``python -m services.gateway``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aiohttp import web

from services.cli import service_main
from services.gateway.server import Gateway, ssl_context
from services.gateway.settings import GatewaySettings
from services.avatar.idle import IdleAvatar
from services.avatar.library import default_avatar, open_store
from services.gateway.avatar_library import AvatarLibrary, CallBudget
from services.gateway.avatars_api import UploadSettings
from services.settings_util import env_int
from services.lipsync.settings import LipsyncSettings
from services.runner import Ready, ServiceMain
from services.settings_util import profile
from services.transport import Transport

logger = logging.getLogger(__name__)


def serve() -> ServiceMain:
    import cv2

    # One OpenCV thread: its pool would otherwise fight the LLM and TTS for the same few cores.
    cv2.setNumThreads(1)
    settings = GatewaySettings.from_env()

    async def main(transport: Transport, ready: Ready) -> None:
        # Idle pictures come from the same prepared avatar the lip-sync engine draws on, so
        # idle and talking frames have one size and one loop (services/avatar/).
        lipsync = LipsyncSettings.from_env()
        store = await asyncio.to_thread(open_store, lipsync.cache_dir)
        prepared = await asyncio.to_thread(default_avatar, store, lipsync.avatar)
        idle = IdleAvatar.for_engine(prepared.loop, lipsync.engine, prepared.geometry)
        # The memory the avatars of the calls may hold at once (each distinct face once).
        budget = CallBudget(env_int(os.environ, "AVATAR_CALL_AVATARS_MB", 2048, 64, 10**6) * 2**20)
        library = AvatarLibrary(store, lipsync.engine, prepared.id, budget, idle.idle_frame)
        gateway = Gateway(settings, transport, idle.idle_frame, library, UploadSettings.from_env(os.environ))
        runner = web.AppRunner(gateway.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context(settings))
        await site.start()
        scheme = "https" if settings.tls_cert else "http"
        # Jupyter-style: the URL to open carries the token when one is required.
        query = f"?token={settings.access_token}" if settings.access_token else ""
        logger.info("serving %s://%s:%d/%s", scheme, settings.host, settings.port, query)
        # In a container the address above is the container's; AVATAR_PUBLIC_URL (set by
        # docker-compose.yml) is the one a person opens, and this line is what they look for
        # in `docker compose logs gateway`.
        public_url = os.environ.get("AVATAR_PUBLIC_URL", "").strip()
        if public_url:
            logger.info("open this in a browser: %s/%s", public_url.rstrip("/"), query)
        if "AVATAR_MAX_CALLS" not in os.environ and profile(os.environ) == "gpu":
            logger.warning("AVATAR_MAX_CALLS=%d on the gpu profile is an estimate (docs/capacity.md), "
                           "not a measurement of this card; measure with `python -m bench.gpu` and "
                           "set AVATAR_MAX_CALLS in .env", settings.max_calls)
        await ready()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    return main


def check() -> None:
    settings = GatewaySettings.from_env()
    if not os.path.isfile(os.path.join(settings.client_dir, "client.html")):
        raise OSError(f"client page not found in {settings.client_dir}")
    ssl_context(settings)


if __name__ == "__main__":
    sys.exit(service_main("gateway", "HTTP + WebSocket signaling + WebRTC media for the browser.", check, serve))
