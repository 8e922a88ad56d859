"""Shared fixtures: one real avatar (main.py) for the whole test session, the gateway timeline,
and a tiny random Llama."""

from __future__ import annotations

import pytest

from bench.avatar_process import AvatarProcess

# Under CI=true a skipped test fails unless it is on that module's allow-list.
pytest_plugins = ["tests.ci_skips"]


@pytest.fixture(scope="session")
def avatar():
    """The real embedded-default avatar, started once (model loading takes a while)."""
    proc = AvatarProcess()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


SPOKEN_QUESTION = "Hello there. What is your name?"
LEAD_S = 3.0  # silence first, so the call is connected before the words start


@pytest.fixture(scope="session")
def question(tmp_path_factory):
    """The fake microphone's WAV for one spoken question, and when the speech ends in it (s)."""
    from bench.browser import write_mic_wav
    from tests.speech import piper_speech

    path = tmp_path_factory.mktemp("mic") / "question.wav"
    speech_s = write_mic_wav(path, piper_speech(SPOKEN_QUESTION), LEAD_S, tail_s=20.0)
    return path, LEAD_S + speech_s


@pytest.fixture
async def timeline():
    """The real Gateway on a scripted timeline (tests/gateway_timeline.py), one session "s1"."""
    from tests.gateway_timeline import Timeline

    tl = Timeline()
    await tl.start()
    yield tl
    await tl.close()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's tokenizer: the real architecture, fast to run."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from services.llm.settings import LlmSettings
    from services.llm.transformers_engine import converted_smollm2

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(converted_smollm2(LlmSettings.from_env().cache_dir), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture
async def serve():
    """Start the real gateway (no stages behind it: an in-memory transport) on a loopback socket
    with the given ``GatewaySettings`` fields; every server is closed after the test."""
    import os

    import numpy as np
    from aiohttp.test_utils import TestServer

    from services.endpoints import Endpoints
    from services.gateway.server import Gateway
    from services.gateway.settings import GatewaySettings
    from tests.fakes import MemoryTransport

    servers = []

    async def start(**kw):
        transport = MemoryTransport(Endpoints.in_dir("/nonexistent"), hwm=100_000)
        settings = GatewaySettings(client_dir=os.path.join(os.path.dirname(__file__), "..", "client"), **kw)
        gateway = Gateway(settings, transport, lambda i: np.zeros((8, 8, 3), np.uint8))
        server = TestServer(gateway.app(), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()
