"""Cut Whisper's repetition loops ("What time is it? What time is it? What time").

Whisper's decoder sometimes fails to end: it says the utterance again, or one word over and
over, until its token budget runs out. On the short mel (see whisper_engine.py) this happened
on ~12% of the utterances of the WER set. A loop shows in the text as a periodic tail: from
some word on, the words repeat with a fixed period, at least twice. We keep the first copy.

To leave real repetitions alone ("bye bye", "stop, stop"), a tail is cut only when the decoder
ran out of budget (no end-of-text: certainly a loop), or when the whole text is one phrase of
two or more words said again (the loop that ends after a second copy).
"""

from __future__ import annotations

import re

_NOT_WORD = re.compile(r"[^\w']+")


def _periodic_tail(keys: list[str]) -> tuple[int, int] | None:
    """(start, period) of the earliest tail that repeats its first ``period`` words twice+."""
    n = len(keys)
    for start in range(n):
        for period in range(1, (n - start) // 2 + 1):
            if all(keys[j] == keys[j - period] for j in range(start + period, n)):
                return start, period
    return None


def drop_repeats(text: str, out_of_budget: bool) -> str:
    words = text.split()
    # Compare words without case or punctuation: loops vary "Stop." / "Stop" / "stop,".
    keys = [_NOT_WORD.sub("", w.lower()) for w in words]
    found = _periodic_tail(keys)
    if found is None:
        return text
    start, period = found
    if out_of_budget or (start == 0 and period >= 2):
        return " ".join(words[: start + period])
    return text
