"""The calculator in the LLM turn (service.py) and the digits' exemption from the repetition
penalty (sampling.py, transformers_engine.digit_token_ids)."""

from __future__ import annotations

import json

import torch

from services import messages as m
from services.llm.sampling import Sampler, Sampling
from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from services.llm.transformers_engine import digit_token_ids
from tests.fakes import FakeLlm, RecordingSender


async def _prompt(settings: LlmSettings, text: str, history: list[dict[str, str]] | None = None) -> list[dict]:
    engine = FakeLlm("Seven.")
    out, events = RecordingSender(), RecordingSender()
    service = LlmService(engine, settings, out, events)
    try:
        await service._answer(m.UserText("s", 1, text, "typed", 0.0, json.dumps(history or [])))
    finally:
        service._pool.shutdown(wait=True)
    assert [c.text for c in out.of(m.TextChunk)] == ["Seven.", ""]
    return engine.prompts[0]


async def test_the_model_sees_the_result_but_the_history_does_not() -> None:
    history = [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "Four."}]
    prompt = await _prompt(LlmSettings(calculator=True), "And what is 10 minus 3?", history)
    assert prompt[-1] == {"role": "user", "content": "And what is 10 minus 3? (10 minus 3 = 7.)"}
    # Earlier questions are as the gateway sent them: a note is for its own turn only.
    assert {"role": "user", "content": "What is 2 plus 2?"} in prompt


async def test_off_or_without_arithmetic_the_question_is_unchanged() -> None:
    off = await _prompt(LlmSettings(calculator=False), "What is 10 minus 3?")
    assert off[-1]["content"] == "What is 10 minus 3?"
    plain = await _prompt(LlmSettings(calculator=True), "How many days are in a week?")
    assert plain[-1]["content"] == "How many days are in a week?"


def test_settings_switch_it_for_the_packaged_model_only() -> None:
    assert LlmSettings.from_env({}).calculator
    assert not LlmSettings.from_env({"AVATAR_LLM_CALCULATOR": "0"}).calculator
    assert not LlmSettings.from_env({"AVATAR_LLM_URL": "http://127.0.0.1:1/v1"}).calculator
    assert LlmSettings.from_env({"AVATAR_LLM_URL": "http://127.0.0.1:1/v1", "AVATAR_LLM_CALCULATOR": "1"}).calculator
    assert not LlmSettings.from_env({}).penalize_digits
    assert LlmSettings.from_env({"AVATAR_LLM_PENALIZE_DIGITS": "1"}).penalize_digits


def test_exempt_tokens_escape_the_repetition_penalty() -> None:
    logits = torch.tensor([[2.0, 2.0, -1.0, 1.5]])
    seen = torch.tensor([[True, True, True, False]])
    plain = Sampler(Sampling(repetition_penalty=2.0))
    assert plain.penalize(logits, seen).tolist() == [[1.0, 1.0, -2.0, 1.5]]
    assert int(plain.pick(logits, seen)[0]) == 3
    exempt = Sampler(Sampling(repetition_penalty=2.0), exempt_ids=frozenset({1, 2}))
    assert exempt.penalize(logits, seen).tolist() == [[1.0, 2.0, -1.0, 1.5]]
    assert int(exempt.pick(logits, seen)[0]) == 1  # "100": the second "0" is not held back


class _Vocab:
    def get_vocab(self) -> dict[str, int]:
        return {"0": 0, "7": 1, "Ġ": 2, "Ġ42": 3, "²": 4, "Ġten": 5, "a1": 6, "▁9": 7, "": 8, "12ab": 9}


def test_digit_tokens_are_ascii_digits_and_the_space_before_them() -> None:
    assert digit_token_ids(_Vocab()) == frozenset({0, 1, 2, 3, 7})
