"""The parts of batched decoding, each against what it replaces: the padded KV batch against
each row decoded alone (a tiny random Llama), the repetition penalty against transformers'
processor, and the incremental detokenizer against decoding all ids at once."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, RepetitionPenaltyLogitsProcessor

from services.llm.detokenizer import IncrementalDetokenizer
from services.llm.kv_batch import KvBatch
from services.llm.sampling import Sampler, Sampling

VOCAB = 64


@pytest.fixture(scope="module")
def tiny_llama():
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


class _Alone:
    """One row decoded by itself, the reference for the batch."""

    def __init__(self, model, ids: list[int]) -> None:
        self.model = model
        out = model(input_ids=torch.tensor([ids]), cache=DynamicCache(config=model.config), use_cache=True)
        self.cache = out.cache
        self.length = len(ids)

    def one_row_cache(self) -> DynamicCache:
        return copy.deepcopy(self.cache)

    def decode(self, token: int) -> torch.Tensor:
        out = self.model(input_ids=torch.tensor([[token]]), cache=self.cache, use_cache=True)
        self.length += 1
        return out.logits[0, -1]


def test_llm_kv_batch_rows_decode_as_if_alone_while_rows_join_and_leave(tiny_llama):
    gen = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(0, VOCAB, (n,), generator=gen).tolist()

    batch = KvBatch()
    rows: list[_Alone] = []

    def join(n: int) -> None:
        alone = _Alone(tiny_llama, ids(n))
        batch.add(alone.one_row_cache(), alone.length)
        rows.append(alone)

    def steps(count: int) -> None:
        for _ in range(count):
            tokens = ids(len(rows))
            got = batch.decode(tiny_llama, tokens)
            want = torch.stack([row.decode(t) for row, t in zip(rows, tokens)])
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
            assert batch.width == max(row.length for row in rows)

    with torch.inference_mode():
        join(3)
        join(9)
        steps(2)
        join(5)  # shorter than the batch: padded on the left
        steps(2)
        batch.keep([0, 2])  # the longest row leaves: its width is trimmed away
        del rows[1]
        assert batch.width == max(row.length for row in rows) == 7
        steps(2)
        join(20)  # longer than the batch: the others are padded
        steps(2)
        batch.keep([2])
        rows[:] = [rows[2]]
        steps(1)
        batch.keep([])
        assert len(batch) == 0 and batch.width == 0


def test_llm_repetition_penalty_matches_transformers_processor():
    torch.manual_seed(2)
    scores = torch.randn(3, 50)
    said = [[1, 2, 3, 3], [7], [0, 49, 10, 11, 12, 49]]
    seen = torch.zeros(3, 50, dtype=torch.bool)
    for row, ids in enumerate(said):
        seen[row, ids] = True
    sampler = Sampler(Sampling(temperature=0.0, repetition_penalty=1.1))
    got = sampler.penalize(scores, seen)
    processor = RepetitionPenaltyLogitsProcessor(1.1)
    for row, ids in enumerate(said):
        want = processor(torch.tensor([ids]), scores[row : row + 1].clone())
        torch.testing.assert_close(got[row : row + 1], want, atol=0, rtol=0)
    assert sampler.pick(scores, seen).tolist() == got.argmax(-1).tolist()


def test_llm_sampling_draws_valid_tokens_with_temperature():
    torch.manual_seed(3)
    sampler = Sampler(Sampling(temperature=0.7, repetition_penalty=1.1, top_k=5, top_p=0.9))
    logits = torch.randn(4, 30)
    picks = sampler.pick(logits, torch.zeros(4, 30, dtype=torch.bool))
    top5 = logits.topk(5, dim=-1).indices
    assert all(int(p) in top5[row].tolist() for row, p in enumerate(picks))


@pytest.mark.slow
def test_llm_detokenizer_pieces_join_to_the_whole_text_across_multibyte_tokens():
    from transformers import AutoTokenizer

    from services.llm.settings import LlmSettings
    from services.llm.transformers_engine import converted_smollm2

    tok = AutoTokenizer.from_pretrained(converted_smollm2(LlmSettings.from_env().cache_dir), local_files_only=True)
    text = "Café ☕ naïve 日本語, I'm fine 🙂🙂!\n\nDone."
    ids = tok.encode(text, add_special_tokens=False)
    ids.insert(5, tok.eos_token_id)  # a special token mid-stream adds no text
    detok = IncrementalDetokenizer(lambda window: tok.decode(window, skip_special_tokens=True))
    pieces = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True) == text
    assert not any("\ufffd" in p for p in pieces)
    # Some tokens carry only part of a character and are held back until it completes.
    held_back = [i for i, piece in zip(ids, pieces) if piece == "" and i != tok.eos_token_id]
    assert held_back


def test_llm_joint_prefill_groups_share_a_forward_only_when_few_cached_ids_are_fed_again():
    from services.llm.batched_decoder import _Joiner, _Request, prefill_groups

    def joiner(prompt: int, cached: int) -> _Joiner:
        request = _Request(list(range(prompt)), 0, 4, lambda: False, id=prompt * 1000 + cached)
        return _Joiner(request, DynamicCache(), cached)

    # Three sessions asking at once: tails of 12, 10 and 14 ids share one forward fed 14 each
    # (2 + 4 cached ids fed again).
    a, b, c = joiner(160, 148), joiner(158, 148), joiner(162, 148)
    assert [[j.tail for j in g] for g in prefill_groups([a, b, c])] == [[14, 12, 10]]
    # A long first prompt next to a short tail would feed 119 cached ids again: apart.
    long, short = joiner(200, 80), joiner(160, 159)
    assert [[j.tail for j in g] for g in prefill_groups([short, long], max_recomputed=32)] == [[120], [1]]
    # A prompt shorter than the group's feed cannot be fed that many ids: apart, though only
    # 15 would be fed again.
    assert [[j.tail for j in g] for g in prefill_groups([joiner(5, 0), joiner(30, 10)])] == [[20], [5]]
