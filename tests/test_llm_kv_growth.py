"""kv_batch.GrowingLayer: a decode step writes its new key/value column into spare room of a
buffer instead of copying the whole cache with torch.cat. It must change no number: greedy
answers of the real packaged model are token-for-token those of the plain DynamicLayer (as
before), alone and in a batch of three rows of different lengths, across a buffer reallocation
and rows leaving; and a tensor anyone already holds (the prefix cache's) never changes."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

import services.llm.kv_batch as kv_batch
from services.llm.kv_batch import _GROW_COLUMNS, GrowingLayer, KvBatch
from services.llm.settings import LlmSettings
from services.llm.transformers_engine import TransformersEngine

STEPS = _GROW_COLUMNS + 12  # past the first buffer's spare room: one reallocation on the way


def test_growing_layer_holds_what_cat_holds_and_never_writes_into_a_held_tensor():
    g = torch.Generator().manual_seed(0)
    start_k, start_v = torch.randn(2, 3, 5, 8, generator=g), torch.randn(2, 3, 5, 8, generator=g)
    plain, growing = DynamicLayer(), GrowingLayer(start_k, start_v)
    plain.update(start_k, start_v)
    held = (start_k.clone(), start_v.clone())
    first_view, rows = None, 2
    for step in range(STEPS):
        k, v = torch.randn(rows, 3, 1, 8, generator=g), torch.randn(rows, 3, 1, 8, generator=g)
        want = plain.update(k, v)
        got = growing.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        if step == 0:
            first_view = (got[0].clone(), got[0])
        if step == STEPS // 2:
            # What KvBatch.keep does: the layer's tensors replaced by others (a row left).
            growing.keys, growing.values = growing.keys[:1].clone(), growing.values[:1].clone()
            plain.keys, plain.values = plain.keys[:1], plain.values[:1]
            rows = 1
    # The tensors it started from (held by reference by the prefix cache) are untouched, and so
    # is a view handed out at the first step.
    assert torch.equal(start_k, held[0]) and torch.equal(start_v, held[1])
    assert torch.equal(first_view[1], first_view[0])
    assert growing.keys.shape == (1, 3, 5 + STEPS, 8)


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)
    # The product's settings (int4 weights, persona and few-shot examples in the cached prefix).
    engine = TransformersEngine.from_settings(LlmSettings.from_env({**os.environ, "AVATAR_LLM_MAX_NEW_TOKENS": "8"}))
    yield engine
    engine.close()


def _with_plain_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch as it was before GrowingLayer: prefill's DynamicLayers, growing by torch.cat."""
    monkeypatch.setattr(kv_batch, "_growing", lambda cache: cache)


PROMPTS = ["Tell me a story about a dragon.", "What is the capital of France?", "How do I bake bread?"]


def _answer_ids(engine: TransformersEngine, text: str) -> list[int]:
    messages = [*engine._fixed, {"role": "user", "content": text}]
    ids = engine._template_ids(messages, add_generation_prompt=True)
    return list(engine._decoder.submit(ids, engine._prefix_len(messages, ids), STEPS, lambda: False))


@pytest.mark.slow
def test_engine_answers_are_token_for_token_those_of_the_cat_cache(engine, monkeypatch):
    prefix = engine._decoder.prefix
    entries = prefix._entries.copy()  # entries are never mutated: both runs start from the same cache
    after = [_answer_ids(engine, p) for p in PROMPTS]
    prefix._entries = entries.copy()
    _with_plain_layers(monkeypatch)
    before = [_answer_ids(engine, p) for p in PROMPTS]
    assert all(len(ids) >= 5 for ids in after)  # the persona keeps answers short
    assert after == before


def _batch_of_three(model: torch.nn.Module) -> tuple[KvBatch, list[int]]:
    batch, last = KvBatch(), []
    for row, length in enumerate((47, 160, 300)):
        ids = torch.randint(100, 5000, (1, length), generator=torch.Generator().manual_seed(row))
        cache = DynamicCache()
        with torch.inference_mode():
            out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        batch.add(out.cache, length)
        last.append(int(out.logits[0, -1].argmax()))
    return batch, last


def _greedy_rows(model: torch.nn.Module) -> tuple[list[list[int]], type]:
    batch, tokens = _batch_of_three(model)
    rows = [[t] for t in tokens]
    alive = [0, 1, 2]
    with torch.inference_mode():
        for step in range(STEPS):
            if step == 20:
                alive = [0, 2]  # the middle row leaves (a barge-in): the others go on
                batch.keep([0, 2])
                tokens = [tokens[0], tokens[2]]
            if step == 50:
                alive = [0]  # the longest row leaves: the batch trims its padding columns
                batch.keep([0])
                tokens = [tokens[0]]
            tokens = batch.decode(model, tokens).argmax(dim=-1).tolist()
            for row, token in zip(alive, tokens, strict=True):
                rows[row].append(token)
    return rows, type(batch._cache.layers[0])


@pytest.mark.slow
def test_batched_greedy_rows_are_token_for_token_those_of_the_cat_cache(engine, monkeypatch):
    after, grown_by = _greedy_rows(engine._model)
    _with_plain_layers(monkeypatch)
    before, cat_by = _greedy_rows(engine._model)
    assert (grown_by, cat_by) == (GrowingLayer, DynamicLayer)
    assert [len(r) for r in after] == [1 + STEPS, 1 + 20, 1 + 50]
    assert after == before
