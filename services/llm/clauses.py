"""Cut a stream of LLM text into clauses that TTS can start speaking early.

The first clause is cut eagerly (at a comma once it is long enough, or after three words when
no punctuation comes) so the avatar starts talking after a few words: the LLM writes fewer
tokens and TTS synthesizes less before the first sound (Piper here: ~55 ms for three words,
~90 ms for five). The second is cut a little less eagerly (twice the words): it must be ready before the first has been
spoken, or the avatar falls silent mid-sentence while the model catches up (seen with a small
model on a busy CPU). Later clauses wait for sentence ends, which sounds more natural, unless
they grow long. What cannot be spoken is cleaned out of every clause (speakable.py), and the
first clause loses a leading speaker label ("Ava: ...").
"""

from __future__ import annotations

import re

from services.llm.speakable import clean_for_speech, strip_speaker

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s")
_SOFT_BREAK = re.compile(r"[,;:—–]\s")

__all__ = ["ClauseSplitter", "clean_for_speech"]


class ClauseSplitter:
    def __init__(self, min_first_chars: int = 12, max_chars: int = 160, first_words: int = 3,
                 name: str = "", max_sentences: int = 0) -> None:
        self._buf = ""
        # Sentences after which the answer is complete (0: no limit): a spoken answer is one or
        # two sentences, and what a small model adds after them is mostly wrong.
        self._max_sentences = max_sentences
        self._sentences = 0
        self._name = name  # the avatar's name, taken off the front of the answer
        self._emitted = 0
        self._min_first = min_first_chars
        self._max = max_chars
        # Words after which the first clause is cut even without punctuation: a small model
        # writes long first sentences, and every word waited for is latency the user hears.
        self._first_words = first_words

    def feed(self, piece: str) -> list[str]:
        """Add generated text; return the clauses that are now complete."""
        if self.done:
            return []
        self._buf += piece
        out: list[str] = []
        while not self.done:
            cut = self._find_cut()
            if cut is None:
                return out
            clause = self._clean(self._buf[:cut])
            self._buf = self._buf[cut:]
            if clause:
                out.append(clause)
                self._emitted += 1
                self._sentences += len(_SENTENCE_END.findall(clause + " "))
        return out

    @property
    def done(self) -> bool:
        """The answer has its sentences: generate no more, and flush nothing."""
        return 0 < self._max_sentences <= self._sentences

    def flush(self) -> list[str]:
        """End of generation: whatever is left is the last clause."""
        if self.done:
            return []
        clause = self._clean(self._buf)
        self._buf = ""
        return [clause] if clause else []

    def _clean(self, text: str) -> str:
        clause = clean_for_speech(text)
        # Until something has been said, a speaker label may still lead ("Assistant:" can be
        # a clause of its own).
        return clean_for_speech(strip_speaker(clause, self._name)) if self._emitted == 0 else clause

    def _find_cut(self) -> int | None:
        m = _SENTENCE_END.search(self._buf)
        if m and len(self._buf[: m.end()].strip()) >= 2:
            return m.end()
        soft_min = (self._min_first, 3 * self._min_first)[self._emitted] if self._emitted < 2 else self._max // 2
        for m in _SOFT_BREAK.finditer(self._buf):
            if m.end() >= soft_min:
                return m.end()
        if self._emitted < 2 and self._first_words:
            budget = self._first_words * (1 + self._emitted)
            words = self._buf.lstrip(" ").split(" ")
            # Only cut once the next word has started, so the last word is complete.
            if len(words) > budget and len(self._buf) >= self._min_first:
                lead = len(self._buf) - len(self._buf.lstrip(" "))
                return lead + len(" ".join(words[:budget])) + 1
        if len(self._buf) > self._max:
            space = self._buf.rfind(" ", 0, self._max)
            return space + 1 if space > 0 else self._max
        return None
