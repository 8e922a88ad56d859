"""The answer-quality benchmark's scoring and its question set."""

from __future__ import annotations

from collections import Counter

from bench.bench_answers import is_right, load_items, sentence_count, starts_with_name, summarize


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
