"""Token ids in, text pieces out, one token at a time.

Decoding each token alone is wrong twice over: a multi-byte character (an emoji, "é" in a
byte-level BPE) can be split over several tokens, and some tokenizers only know whether a
token starts a word from the token before it. So, as vLLM and TGI do, we decode a short
window that starts one emitted piece back and emit only the text that window gained, holding
back while it ends in an incomplete character (U+FFFD). Joined, the pieces equal decoding all
ids at once.
"""

from __future__ import annotations

from collections.abc import Callable

_INCOMPLETE = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        # ``decode`` must skip special tokens, so an end-of-turn marker adds no text.
        self._decode = decode
        self._ids: list[int] = []
        # ids[_prefix:_read] were already emitted and only give context; ids[_read:] are not.
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        """The text ``token_id`` completes, or "" while it is not yet certain."""
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is still held back, at the end of the answer."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) <= len(before) or (after.endswith(_INCOMPLETE) and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]
