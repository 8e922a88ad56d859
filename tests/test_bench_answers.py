"""The answer-quality benchmark's scoring and its question set."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from bench.bench_answers import (
    BEFORE_TUNING, is_right, load_items, parse_overrides, sentence_count, split_items, starts_with_name, summarize,
)
from services.llm.settings import DEFAULT_PERSONA, LlmSettings
from services.llm.speakable import persona_name


def test_set_has_fifty_questions_in_every_category() -> None:
    items = load_items()
    assert len(items) >= 50
    assert len({i.id for i in items}) == len(items)
    counts = Counter(i.category for i in items)
    assert set(counts) == {"facts", "arithmetic", "everyday", "small talk", "follow-up"}
    assert min(counts.values()) >= 8
    assert all(i.history for i in items if i.category == "follow-up")
    assert all(i.expect and all(i.expect) for i in items)


def test_right_needs_whole_words() -> None:
    legs = (("8", "eight"),)
    assert is_right("A spider has eight legs.", legs)
    assert is_right("A spider has 8 legs.", legs)
    assert not is_right("A spider has 80 legs.", legs)
    assert not is_right("Eighteen.", legs)
    hours = (("24", "twenty four"),)
    assert is_right("There are twenty-four hours in a day.", hours)
    assert not is_right("There are twenty hours, or four.", hours)
    assert is_right("Your name is Sam's!", (("sam",),)) is False  # "sams" is not "sam"
    assert is_right("It is PARIS.", (("paris",),))


def test_every_group_must_match() -> None:
    expect = (("red",), ("blue", "green"))
    assert is_right("Red and green.", expect)
    assert not is_right("Red only.", expect)


def test_form_checks() -> None:
    assert starts_with_name("Ava: hello", "Ava")
    assert not starts_with_name("I am Ava.", "Ava")
    assert sentence_count("One. Two! Three?") == 3
    assert sentence_count("Twenty-four hours") == 1
    assert sentence_count("It is 3.5 degrees.") == 1


def test_summary() -> None:
    rows = [
        {"category": "facts", "right": True, "first_clause_ms": 100.0, "starts_with_name": False, "sentences": 1, "errors": []},
        {"category": "facts", "right": False, "first_clause_ms": 300.0, "starts_with_name": True, "sentences": 3, "errors": []},
        {"category": "small talk", "right": True, "first_clause_ms": None, "starts_with_name": False, "sentences": 1, "errors": ["x"]},
    ]
    s = summarize(rows)
    assert s["right"] == 2 and abs(s["score"] - 2 / 3) < 1e-9
    assert s["per_category"] == {"facts": 0.5, "small talk": 1.0}
    assert s["first_clause_ms_median"] == 200.0
    assert (s["starts_with_name"], s["over_two_sentences"], s["errors"]) == (1, 1, 1)


def test_tune_and_held_out_halves_split_every_category() -> None:
    items = load_items()
    tune, held = split_items(items, "tune"), split_items(items, "held-out")
    assert {i.id for i in tune}.isdisjoint({i.id for i in held})
    assert len(tune) + len(held) == len(items) and abs(len(tune) - len(held)) <= 5
    cats = {i.category for i in items}
    assert {i.category for i in tune} == cats == {i.category for i in held}
    assert split_items(items, "all") == items
    with pytest.raises(ValueError):
        split_items(items, "test")


def test_per_split_scores() -> None:
    tune = split_items(load_items(), "tune")[0].id
    held = split_items(load_items(), "held-out")[0].id
    rows = [
        {"id": tune, "category": "facts", "right": True, "first_clause_ms": 1.0, "starts_with_name": False, "sentences": 1, "errors": []},
        {"id": held, "category": "facts", "right": False, "first_clause_ms": 1.0, "starts_with_name": False, "sentences": 1, "errors": []},
    ]
    assert summarize(rows)["per_split"] == {"tune": 1.0, "held-out": 0.0}


def test_vs_overrides_are_typed_settings_fields() -> None:
    base = LlmSettings()
    assert parse_overrides("quant=none,few_shot=0,repetition_penalty=1.0,max_sentences=1", base) == {
        "quant": "none", "few_shot": False, "repetition_penalty": 1.0, "max_sentences": 1,
    }
    for bad in ("nonsense=1", "quant"):
        with pytest.raises(ValueError):
            parse_overrides(bad, base)


def test_the_baseline_keeps_the_persona_it_had() -> None:
    # --paired-baseline compares against the settings before issue 27, old persona included.
    assert BEFORE_TUNING["persona"] != DEFAULT_PERSONA
    assert persona_name(DEFAULT_PERSONA) == persona_name(BEFORE_TUNING["persona"]) == "Ava"
    # ...and without what came with it: the calculator, digits free of the repetition penalty.
    before = dataclasses.replace(LlmSettings.from_env({}), **BEFORE_TUNING)
    assert not before.calculator and before.penalize_digits and not before.few_shot


def test_no_example_is_a_benchmark_question() -> None:
    """Tuning must not teach the answers: no example (the default's or a variant's) asks a
    question of the benchmark."""
    from bench.answer_variants import V3, VARIANTS
    from bench.bench_answers import words

    asked = {" ".join(words(i.question)) for i in load_items()}
    examples = {q for q, _ in V3} | {q for v in VARIANTS.values() for q, _ in v.get("examples", ())}
    assert examples and not {" ".join(words(q)) for q in examples} & asked
