"""The decoder's prefix cache (services/llm/prefix_cache.py): a turn whose prompt begins with an
earlier prompt prefills only the new tokens, with the logits of a full prefill; the system
prompt is served on a first turn; entries stay private and bounded. A tiny random Llama (the
real architecture, float32), and SmolLM2's engine for a whole conversation."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from services.llm.prefix_cache import PrefixCache
from services.llm.settings import LlmSettings
from services.llm.transformers_engine import TransformersEngine


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )).eval()


def prefill(model, cache: DynamicCache, ids: list[int], start: int):
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids[start:]]), cache=cache, use_cache=True)
    return out.logits[0, -1], out.cache


def full(model, ids: list[int]):
    return prefill(model, DynamicCache(config=model.config), ids, 0)


def test_a_prompt_that_extends_an_earlier_one_prefills_only_the_new_tokens(model):
    cache = PrefixCache(model)
    turn1 = list(range(10, 50))
    with torch.inference_mode():
        kv, start = cache.start(turn1, prefix_len=12)  # the system prompt: computed and kept
        assert start == 12
        logits1, out = prefill(model, kv, turn1, start)
        cache.remember(turn1, out)
        turn2 = turn1 + list(range(60, 85))
        kv, start = cache.start(turn2, prefix_len=12)
        assert start == len(turn1)
        logits2, _ = prefill(model, kv, turn2, start)
    assert torch.allclose(logits1, full(model, turn1)[0], atol=1e-4)
    assert torch.allclose(logits2, full(model, turn2)[0], atol=1e-4)


def test_an_entry_is_unchanged_when_the_cache_it_came_from_grows(model):
    """remember() keeps the tensors without copying them: decoding goes on extending that very
    cache, which must replace its tensors rather than write into them."""
    cache = PrefixCache(model)
    ids = list(range(5, 25))
    with torch.inference_mode():
        _, out = full(model, ids)
        cache.remember(ids, out)
        before = [(k.clone(), v.clone()) for k, v in cache._entries[tuple(ids)]]
        for token in (7, 8, 9):  # decode steps on the remembered cache itself
            out = model(input_ids=torch.tensor([[token]]), cache=out, use_cache=True).cache
        assert out.layers[0].keys.shape[-2] == len(ids) + 3
        kept = cache._entries[tuple(ids)]
        assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(kept, before, strict=True))
        kv, start = cache.start(ids + [1], prefix_len=0)
        logits, _ = prefill(model, kv, ids + [1], start)
    assert start == len(ids)
    assert torch.allclose(logits, full(model, ids + [1])[0], atol=1e-4)


def test_the_longest_shared_beginning_is_used_and_one_token_is_always_left(model):
    cache = PrefixCache(model)
    a, b = list(range(1, 30)), list(range(1, 20)) + list(range(100, 120))
    with torch.inference_mode():
        for ids in (a, b):
            cache.remember(ids, full(model, ids)[1])
        kv, start = cache.start(list(range(1, 25)) + [7, 7], prefix_len=0)
        assert start == 24
        kv, start = cache.start(a, prefix_len=0)  # the very same prompt: the last id is prefilled
        assert start == len(a) - 1
        logits, _ = prefill(model, kv, a, start)
    assert torch.allclose(logits, full(model, a)[0], atol=1e-4)


def test_entries_are_private_and_bounded(model):
    cache = PrefixCache(model, max_entries=3, max_tokens=100)
    base = list(range(1, 21))
    with torch.inference_mode():
        cache.remember(base, full(model, base)[1])
        kv, start = cache.start(base + [50, 51], prefix_len=0)
        prefill(model, kv, base + [50, 51], start)  # extends its own copy only
        kv2, start2 = cache.start(base + [60], prefix_len=0)
        assert start2 == len(base) and kv2.layers[0].keys.shape[-2] == len(base)
        # A prompt that extends an entry replaces it: the shorter one is redundant.
        longer = base + [70, 71, 72]
        cache.remember(longer, full(model, longer)[1])
        assert cache.entries == 1 and cache.tokens == len(longer)
        for k in range(6):
            ids = [200 + k] * 30
            cache.remember(ids, full(model, ids)[1])
            assert cache.entries <= 3 and cache.tokens <= 100
        # Least recently used left first; a cache of the wrong size is not kept.
        cache.remember([1, 2, 3], full(model, [1, 2, 3, 4])[1])
    assert cache.entries <= 3 and (1, 2, 3) not in [k[:3] for k in cache._entries]


@pytest.mark.slow
def test_smollm2_second_turn_of_a_conversation_starts_from_the_first_turns_prompt():
    env = {**os.environ, "AVATAR_LLM_MAX_NEW_TOKENS": "12"}
    engine = TransformersEngine.from_settings(LlmSettings.from_env(env))
    try:
        persona = [{"role": "system", "content": "You are Ava. Answer briefly."}]
        turn1 = persona + [{"role": "user", "content": "What is the capital of France?"}]
        answer = "".join(engine.stream(turn1, lambda: False)).strip()
        assert answer
        turn2 = turn1 + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And of Spain?"}]
        ids1 = engine._template_ids(turn1, add_generation_prompt=True)
        ids2 = engine._template_ids(turn2, add_generation_prompt=True)
        assert ids2[: len(ids1)] == ids1  # the chat template keeps earlier turns as they were
        with torch.inference_mode():
            _, start = engine.decoder.prefix.start(ids2, engine._prefix_len(turn2, ids2))
        assert start >= len(ids1)
        assert "".join(engine.stream(turn2, lambda: False)).strip()
    finally:
        engine.close()


def test_few_shot_examples_are_part_of_the_cached_prefix(tiny_llama_dir):
    """The persona and its examples are computed once (at warm-up) and every first turn starts
    after them: examples add no prefill to any turn (issue 27)."""
    from services.llm.few_shot import example_messages

    fixed = [{"role": "system", "content": "Be brief."}, *example_messages()]
    engine = TransformersEngine(tiny_llama_dir, "auto", "cpu", max_new_tokens=4, persona="Be brief.",
                                examples=example_messages())
    try:
        fixed_ids = engine._template_ids(fixed, add_generation_prompt=False)
        assert len(fixed_ids) > 60  # five exchanges: well worth caching
        for question in ("What is the capital of Peru?", "How are you?"):
            chat = [*fixed, {"role": "user", "content": question}]
            ids = engine._template_ids(chat, add_generation_prompt=True)
            assert engine._prefix_len(chat, ids) == len(fixed_ids)
            with torch.inference_mode():
                _, start = engine.decoder.prefix.start(ids, engine._prefix_len(chat, ids))
            assert start >= len(fixed_ids)  # served from the cache the warm-up filled
            assert len(list(engine.stream(chat, lambda: False))) >= 1  # random weights: any text
        # Without the examples the system prompt alone is still the cached prefix.
        plain = [fixed[0], {"role": "user", "content": "Hi"}]
        plain_ids = engine._template_ids(plain, add_generation_prompt=True)
        assert 0 < engine._prefix_len(plain, plain_ids) < len(fixed_ids)
    finally:
        engine.close()
