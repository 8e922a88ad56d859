"""Paced batched decoding (services/llm/batched_decoder.Pace): an answer's first lead tokens
come as fast as the model goes, later ones no faster than the pace; a question that arrives while
the decoder rests gets its first token at once; a barge-in (cancel) ends a resting answer at
once; the service's settings turn pacing on by default and 0 turns it off. A 2-layer random
Llama (tests/conftest.py), offline."""

from __future__ import annotations

import threading
import time

import pytest

from services.llm.batched_decoder import Pace
from services.llm.settings import LlmSettings
from services.llm.transformers_engine import TransformersEngine, pace_from_settings

pytestmark = pytest.mark.slow  # loads SmolLM2's tokenizer (converted once)


def arrivals(engine: TransformersEngine, ids: list[int], n: int) -> tuple[list[float], object]:
    """Submit; return the list the reader thread fills with each token's arrival time."""
    times: list[float] = []
    stream = engine.decoder.submit(ids, 0, n, lambda: False)

    def read() -> None:
        for _ in stream:
            times.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return times, (stream, reader)


def test_lead_tokens_come_at_model_speed_and_the_rest_at_the_pace(tiny_llama_dir):
    pace = Pace(lead_tokens=4, tokens_per_s=20.0)
    engine = TransformersEngine(tiny_llama_dir, "auto", "cpu", max_new_tokens=14, persona="", pace=pace)
    try:
        ids = engine._template_ids([{"role": "user", "content": "hi"}], add_generation_prompt=True)
        started = time.monotonic()
        times, (_stream, reader) = arrivals(engine, ids, 14)
        reader.join(30)
        assert len(times) == 14  # random weights: no early end
        # After the 4 lead tokens, token k (k >= 4, 0-based) is due 1/20 s per token after the
        # first: the last is at least (13 - 4) / 20 = 0.45 s after the first token.
        assert times[-1] - times[0] >= (13 - 4) / 20.0 - 0.02
        # The lead is not paced: a 2-layer model writes 4 tokens in milliseconds (bound loose
        # for a busy CI machine, still far under the paced spacing of the rest).
        assert times[3] - started < 0.4
        assert times[3] - times[0] < (times[-1] - times[3]) / 3
    finally:
        engine.close()


def test_a_new_question_is_not_paced_and_a_resting_answer_cancels_at_once(tiny_llama_dir):
    # 2 tokens a second after a lead of 2: the first answer rests ~0.5 s between tokens.
    pace = Pace(lead_tokens=2, tokens_per_s=2.0)
    engine = TransformersEngine(tiny_llama_dir, "auto", "cpu", max_new_tokens=40, persona="", pace=pace)
    try:
        ids = engine._template_ids([{"role": "user", "content": "hi"}], add_generation_prompt=True)
        first, (first_stream, first_reader) = arrivals(engine, ids, 40)
        deadline = time.monotonic() + 10
        while len(first) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(first) >= 3  # the first answer is now resting between its paced tokens
        asked = time.monotonic()
        second, (_s, second_reader) = arrivals(engine, ids, 1)
        second_reader.join(10)
        assert second and second[0] - asked < 0.3  # admitted at once, not after a rest
        cancelled = time.monotonic()
        first_stream.cancel()
        first_reader.join(5)
        assert not first_reader.is_alive()
        assert time.monotonic() - cancelled < 0.3
        assert len(first) < 40
    finally:
        engine.close()


def test_settings_pace_by_default_and_zero_turns_it_off():
    assert pace_from_settings(LlmSettings.from_env({})) == Pace(lead_tokens=24, tokens_per_s=8.0)
    assert pace_from_settings(LlmSettings.from_env({"AVATAR_LLM_PACE_TOKENS_PER_S": "0"})) is None
    assert pace_from_settings(LlmSettings.from_env({"AVATAR_LLM_PACE_TOKENS_PER_S": "12",
                                                    "AVATAR_LLM_PACE_LEAD_TOKENS": "40"})) == Pace(40, 12.0)
