"""What TTS gets from the model's text: markup, emoji, stray quotes and speaker labels go."""

from __future__ import annotations

import pytest

from services.llm.clauses import ClauseSplitter
from services.llm.speakable import clean_for_speech, persona_name, strip_speaker


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("**Paris** is the _capital_.", "Paris is the capital."),
        ("# Answer\n- one\n- two", "Answer one two"),
        ("1. Mix the flour", "Mix the flour"),
        ("*smiles* Hello there!", "Hello there!"),
        ("I love it 😀🎉!", "I love it!"),
        ("\"Hello,\" she said.", "Hello, she said."),
        ("'Winter' is cold, isn't it?", "Winter is cold, isn't it?"),
        ("The dogs' bowls are full.", "The dogs' bowls are full."),
        ("See [the map](https://example.org/x) here.", "See the map here."),
        ("Visit https://example.org now", "Visit now"),
        ("Two plus two = 4.", "Two plus two equals 4."),
        ("`code` and <b>tags</b>", "code and tags"),
        ("...", ""),
        ("🎉 ** ", ""),
        ("  spaced   out  ,  text ", "spaced out, text"),
    ],
)
def test_clean_for_speech(raw: str, spoken: str) -> None:
    assert clean_for_speech(raw) == spoken


@pytest.mark.parametrize(
    ("raw", "name", "spoken"),
    [
        ("Ava: I'm glad you asked.", "Ava", "I'm glad you asked."),
        ("ava, twenty-four hours.", "Ava", "Twenty-four hours."),
        ("Assistant: Paris.", "Ava", "Paris."),
        ("A: Seven days.", "", "Seven days."),
        ("Ava is my name.", "Ava", "Ava is my name."),  # a sentence, not a label
        ("Avalanches are cold.", "Ava", "Avalanches are cold."),
        ("Paris.", "Ava", "Paris."),
    ],
)
def test_strip_speaker(raw: str, name: str, spoken: str) -> None:
    assert strip_speaker(raw, name) == spoken


def test_persona_name() -> None:
    assert persona_name("You are Ava, a friendly talking avatar.") == "Ava"
    assert persona_name("You are a helpful assistant.") == ""
    assert persona_name("Be brief.") == ""


def _split(pieces: list[str], name: str = "Ava") -> list[str]:
    splitter = ClauseSplitter(6, name=name)
    out = [c for p in pieces for c in splitter.feed(p)]
    return out + splitter.flush()


def test_splitter_strips_the_label_of_the_first_clause_only() -> None:
    # Token by token, as a model streams it: the label arrives in pieces.
    clauses = _split(["Ava", ":", " I'm", " glad", " you", " asked", ".", " Ava", ": yes", "."])
    assert clauses[0] == "I'm glad"  # the first clause is cut after three words, the label one of them
    assert " ".join(clauses) == "I'm glad you asked. Ava: yes."


def test_splitter_label_alone_in_a_clause_is_dropped() -> None:
    clauses = _split(["Assistant", ":", " The", " capital", " is", " Paris", "."])
    assert " ".join(clauses) == "The capital is Paris."


def test_splitter_cleans_every_clause() -> None:
    clauses = _split(["**Sure!** ", "Here", " is", " a", " 😀 fact", ": ", "bees ", "make ", "honey."])
    assert " ".join(clauses) == "Sure! Here is a fact: bees make honey."


def test_splitter_ends_the_answer_after_two_sentences() -> None:
    splitter = ClauseSplitter(6, max_sentences=2)
    text = "Paris is the capital. It is in France. It has the Eiffel tower. "
    out = [c for word in text.split(" ") for c in splitter.feed(word + " ")]
    assert splitter.done
    assert " ".join(out + splitter.flush()) == "Paris is the capital. It is in France."
    assert splitter.feed("More words. ") == []


def test_splitter_without_a_limit_keeps_everything() -> None:
    splitter = ClauseSplitter(6)
    text = "One. Two. Three. Four."
    out = [c for word in text.split(" ") for c in splitter.feed(word + " ")] + splitter.flush()
    assert not splitter.done and " ".join(out) == text
