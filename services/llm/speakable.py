"""Make a clause of model output fit to be spoken: what TTS would read out wrongly goes.

A small model writes markup (``**bold**``, ``# Title``, list bullets, links), stage directions
between asterisks (``*smiles*``), emoji, stray quote marks and a speaker label before its
answer ("Ava: I'm glad..."). TTS would spell some of these out, pause on others, or say the
avatar's own name first. Everything here works on one clause at a time (the clause splitter
calls it), and the first clause of an answer also loses a leading speaker label.
"""

from __future__ import annotations

import re

# [text](url) -> text; bare URLs are unspeakable noise for a voice.
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"https?://\S+")
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,40}>")
# *smiles* (a single-asterisk action) is not said; **bold** and __bold__ keep their words.
_ACTION = re.compile(r"(?<!\*)\*(?!\*)([^*\n]{1,40})(?<!\*)\*(?!\*)")
# Headings and list bullets at the start of a line.
_LINE_MARK = re.compile(r"(?m)^\s*(?:#{1,6}\s+|[-*+•]\s+|\d{1,2}[.)]\s+)")
_MARKUP = re.compile(r"[*_#`~<>|\[\]{}\\^]")
# "2 + 2 = 4": a voice must say the sign (small models write sums this way).
_EQUALS = re.compile(r"\s*=+\s*")
_EMOJI = re.compile(
    "[\U0001F000-\U0001FAFF\U00002600-\U000027BF\U0000FE0F\U0000200D\U00002B00-\U00002BFF"
    "\U0001F1E6-\U0001F1FF]"
)
# Double quotes of any kind are never spoken. A single quote is kept only as an apostrophe
# (between letters, or after a plural's s: "dogs' bowls").
_DOUBLE_QUOTES = re.compile(r"[\"“”„«»]")
_SINGLE_QUOTE = re.compile(r"(?<![A-Za-z])['‘’]|['‘’](?![A-Za-z])(?<![sS]['’])")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.!?;:])")
_SPACES = re.compile(r"\s+")
# A speaker label at the very start: "Ava:", "Assistant -", "A:".
_LABEL = re.compile(r"^\s*(?:assistant|ai|bot|a)\s*[:\-–—]\s*", re.IGNORECASE)


def clean_for_speech(text: str) -> str:
    """One clause as it should be spoken (may be empty: nothing speakable was left)."""
    text = _LINK.sub(r"\1", text)
    text = _URL.sub("", text)
    text = _TAG.sub("", text)
    text = _ACTION.sub("", text)
    text = _LINE_MARK.sub("", text)
    text = _MARKUP.sub("", text)
    text = _EQUALS.sub(" equals ", text)
    text = _EMOJI.sub("", text)
    text = _DOUBLE_QUOTES.sub("", text)
    text = _SINGLE_QUOTE.sub("", text)
    text = _SPACES.sub(" ", text).strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    # A clause left with punctuation only ("...", "()") has nothing to say.
    return text if any(ch.isalnum() for ch in text) else ""


def strip_speaker(text: str, name: str = "") -> str:
    """The first clause without a leading speaker label ("Ava:", "Ava,", "Assistant:").

    Only a label is taken off: "Ava is my name" keeps its first word, since it is a sentence.
    """
    if name:
        label = re.compile(rf"^\s*{re.escape(name)}\s*[:,\-–—]\s*", re.IGNORECASE)
        text = label.sub("", text, count=1)
    text = _LABEL.sub("", text, count=1)
    # "Ava: i'm glad" -> "I'm glad": the answer starts where the label ended.
    return text[:1].upper() + text[1:] if text else text


_PERSONA_NAME = re.compile(r"\byou are ([A-Z][a-z]+)\b", re.IGNORECASE)


def persona_name(persona: str) -> str:
    """The avatar's name as the persona prompt gives it ("You are Ava, ..." -> "Ava")."""
    m = _PERSONA_NAME.search(persona)
    return m.group(1) if m and m.group(1).lower() not in ("a", "an", "the") else ""
