"""Key/value caches of recent prompts, so a turn prefills only what is new.

Every prompt of a conversation begins with the previous prompt of that conversation: the
system prompt, the history, and the last question, followed now by the answer the user heard
and the new question (history.py keeps the oldest exchanges stable so this holds even when
the history is trimmed). Prefill is what a CPU turn waits for before its first token (400
prompt tokens: 583 ms for SmolLM2 on one core here, against ~120 ms for the 60-100 new tokens
of a typical turn), so the cache holds each recent prompt's keys and values and serves the
longest prefix any of them shares with a new prompt. The system prompt alone is computed on
demand, so a first turn or a restarted service still skips it.

Bounded: at most ``max_entries`` prompts and ``max_tokens`` tokens in all, least recently used
first out (SmolLM2 in float32: 46 KB a token, so the defaults hold at most 94 MB). Used only on
the decode thread, so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from transformers import DynamicCache

DEFAULT_MAX_ENTRIES = 4
DEFAULT_MAX_TOKENS = 2048

_Layers = list[tuple[torch.Tensor, torch.Tensor]]


def common_prefix(a: tuple[int, ...], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    def __init__(self, model: torch.nn.Module, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self._model = model
        self._max_entries = max_entries
        self._max_tokens = max_tokens
        # prompt ids -> per layer (keys, values) of those ids, batch 1; last = most recent.
        self._entries: OrderedDict[tuple[int, ...], _Layers] = OrderedDict()

    @property
    def tokens(self) -> int:
        """Tokens held in all entries (0 before the first prompt)."""
        return sum(len(ids) for ids in self._entries)

    @property
    def entries(self) -> int:
        return len(self._entries)

    def start(self, ids: list[int], prefix_len: int) -> tuple[DynamicCache, int]:
        """A private cache already holding the longest known prefix of ``ids``, and its length.

        ``ids[:prefix_len]`` is the system prompt: when no entry covers that much, it is
        computed now and kept. At least one id is always left for prefill to run the model on.
        The returned cache is new; extending it (prefill does) never touches an entry.
        """
        limit = len(ids) - 1
        best_key: tuple[int, ...] | None = None
        best = 0
        for key in self._entries:
            n = min(common_prefix(key, ids), limit)
            if n > best:
                best_key, best = key, n
        if best < prefix_len <= limit:
            prefix = ids[:prefix_len]
            out = self._model(input_ids=torch.tensor([prefix], device=self._model.device), use_cache=True,
                              logits_to_keep=1)
            self.remember(prefix, out.cache)
            best_key, best = tuple(prefix), prefix_len
        cache = DynamicCache(config=self._model.config)
        if best_key is None or best <= 0:
            return cache, 0
        self._entries.move_to_end(best_key)
        for layer, (keys, values) in enumerate(self._entries[best_key]):
            # update() copies into the new cache's own tensors.
            cache.update(keys[..., :best, :], values[..., :best, :], layer)
        return cache, best

    def remember(self, ids: list[int], cache: DynamicCache) -> None:
        """Keep the keys and values of ``ids`` (a one-row ``cache`` holding exactly them).

        Kept by reference, not copied: the batch goes on extending the cache it was given, but
        its layers (kv_batch.GrowingLayer) copy a tensor they did not allocate into a buffer of
        their own before growing, and never write where a view already handed out lies, so the
        ones held here never change. A copy (3.4 ms for the
        persona and examples' 162 tokens here) was paid before every answer's first token.
        """
        key = tuple(ids)
        if not key or len(key) > self._max_tokens:
            return
        layers = [(layer.keys.detach(), layer.values.detach()) for layer in cache.layers]
        if any(keys.shape[0] != 1 or keys.shape[-2] != len(key) for keys, _ in layers):
            return  # not a plain one-row cache of these ids: nothing safe to keep
        # A prompt that is the beginning of this one is now redundant.
        for old in [k for k in self._entries if len(k) <= len(key) and key[: len(k)] == k]:
            del self._entries[old]
        self._entries[key] = layers
        while len(self._entries) > self._max_entries or self.tokens > self._max_tokens:
            self._entries.popitem(last=False)
