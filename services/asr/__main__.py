"""Entry point: ``python -m services.asr``."""

from __future__ import annotations

import asyncio
import sys

from services.asr.engines import build_engine
from services.asr.service import AsrService
from services.asr.settings import AsrSettings
from services.asr.utterance import SileroVad
from services.cli import service_main
from services.runner import Ready, ServiceMain
from services.transport import Transport


def serve() -> ServiceMain:
    import torch

    # VAD and decoding are small sequential models; extra torch threads only steal CPU from
    # the LLM on a small machine.
    torch.set_num_threads(1)
    settings = AsrSettings.from_env()

    async def main(transport: Transport, ready: Ready) -> None:
        engine = await asyncio.to_thread(build_engine, settings)
        await asyncio.to_thread(SileroVad)  # load once now so the first session starts fast
        ep = transport.endpoints
        service = AsrService(engine, SileroVad, settings, transport.push(ep.gateway_events))
        inbox, control = transport.pull(ep.asr_in), transport.subscribe(ep.control)
        await ready()
        await service.run(inbox, control)

    return main


def check() -> None:
    build_engine(AsrSettings.from_env())
    SileroVad()


if __name__ == "__main__":
    sys.exit(service_main("asr", "Speech recognition: VAD, endpointing, Whisper/pocketsphinx/Vosk.", check, serve))
