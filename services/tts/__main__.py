"""Entry point: ``python -m services.tts``."""

from __future__ import annotations

import asyncio
import sys

from services.cli import service_main
from services.cuda_check import require_cuda
from services.runner import Ready, ServiceMain
from services.transport import Transport
from services.tts.engines import build_engine
from services.tts.service import TtsService
from services.tts.settings import TtsSettings


def serve() -> ServiceMain:
    settings = TtsSettings.from_env()

    async def main(transport: Transport, ready: Ready) -> None:
        engine = await asyncio.to_thread(build_engine, settings)
        ep = transport.endpoints
        service = TtsService(engine, transport.push(ep.lipsync_in), transport.push(ep.gateway_events),
                             max_lead_s=settings.max_lead_s)
        inbox, control = transport.pull(ep.tts_in), transport.subscribe(ep.control)
        await ready()
        await service.run(inbox, control)

    return main


def check() -> None:
    build_engine(TtsSettings.from_env())


if __name__ == "__main__":
    require_cuda("tts")  # first: on the GPU profile, no CUDA = a clear exit before any model loads
    sys.exit(service_main("tts", "Text to speech per clause: Piper or Coqui, at 16 kHz.", check, serve))
