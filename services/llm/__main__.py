"""Entry point: ``python -m services.llm``."""

from __future__ import annotations

import asyncio
import sys

from services.cli import service_main
from services.cuda_check import require_cuda
from services.llm.engines import build_engine
from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from services.runner import Ready, ServiceMain
from services.transport import Transport


def serve() -> ServiceMain:
    settings = LlmSettings.from_env()

    async def main(transport: Transport, ready: Ready) -> None:
        engine = await asyncio.to_thread(build_engine, settings)
        try:
            ep = transport.endpoints
            service = LlmService(engine, settings, transport.push(ep.tts_in), transport.push(ep.gateway_events))
            inbox, control = transport.pull(ep.llm_in), transport.subscribe(ep.control)
            await ready()
            await service.run(inbox, control)
        finally:
            engine.close()

    return main


def check() -> None:
    build_engine(LlmSettings.from_env()).close()


if __name__ == "__main__":
    require_cuda("llm")  # first: on the GPU profile, no CUDA = a clear exit before any model loads
    sys.exit(service_main("llm", "Language model: streamed answers cut into clauses.", check, serve))
