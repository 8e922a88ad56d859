"""Requests of different lengths decoded as one batch: their KV caches side by side.

Each row is one request's own cache, right-aligned in a shared ``DynamicCache``: a shorter row
is padded with zero keys/values on the left, and the attention mask hides the padding, so a
decode step for B rows is one model forward over a batch of B. Position ids are given per row
(the row's real length), because the padded width is not any row's position.

Invariants: row i of every layer, of ``_mask`` and of ``_lengths`` belongs to the same request;
the leftmost column holds a real token of at least one row (all-padding columns are trimmed when
rows leave); no element of a key/value tensor handed out is ever written afterwards (rows
leaving or joining replace the tensors; a step writes only past them, see GrowingLayer).

A decode step appends one column to every layer. DynamicLayer does that with ``torch.cat``, a
copy of the whole cache of all 30 layers per step: 0.9 ms of a 30 ms step at 50 tokens of
context, 3.5-7.5 ms at 400 (measured, docs/llm.md), so later turns of a conversation answered
slower. The batch's layers are ``GrowingLayer``s instead: they write the new column into spare
room of a buffer allocated in chunks and hand out a view of its filled part. Only the spare room
past every view handed out is written, so a tensor anyone already holds (the prefix cache keeps
prefill's by reference) never changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


# Columns of spare room a layer's buffer gets when it is (re)allocated: a copy every 64 steps.
_GROW_COLUMNS = 64


class GrowingLayer(DynamicLayer):
    """A full-attention cache layer whose keys/values are views of buffers with spare columns."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.device = keys.device
        self.is_initialized = True
        # The views last handed out; any other tensor in keys/values (KvBatch replaced it)
        # is not ours to extend in place, so the next update copies it into a new buffer.
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        used, new = self.keys.shape[-2], key_states.shape[-2]
        ours = self._views is not None and self._views[0] is self.keys and self._views[1] is self.values
        if not ours or self._buffers is None or used + new > self._buffers[0].shape[-2]:
            self._buffers = (self._grown(self.keys, used + new), self._grown(self.values, used + new))
        key_buffer, value_buffer = self._buffers
        key_buffer[..., used:used + new, :] = key_states
        value_buffer[..., used:used + new, :] = value_states
        self.keys, self.values = key_buffer[..., :used + new, :], value_buffer[..., :used + new, :]
        self._views = (self.keys, self.values)
        return self.keys, self.values

    @staticmethod
    def _grown(states: torch.Tensor, needed: int) -> torch.Tensor:
        shape = (*states.shape[:-2], needed + _GROW_COLUMNS, states.shape[-1])
        buffer = torch.empty(shape, dtype=states.dtype, device=states.device)
        buffer[..., :states.shape[-2], :] = states
        return buffer


def _growing(cache: DynamicCache) -> DynamicCache:
    """The same cache with its layers as GrowingLayers (same tensors, nothing copied)."""
    cache.layers = [layer if isinstance(layer, GrowingLayer) else GrowingLayer(layer.keys, layer.values)
                    for layer in cache.layers]
    return cache


class KvBatch:
    def __init__(self) -> None:
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [B, W] long, 1 = real token, 0 = padding
        self._lengths: torch.Tensor | None = None  # [B] long, real tokens per row

    def __len__(self) -> int:
        return 0 if self._mask is None else int(self._mask.shape[0])

    @property
    def width(self) -> int:
        """Columns of the padded cache (the longest row)."""
        return 0 if self._mask is None else int(self._mask.shape[1])

    def add(self, cache: DynamicCache, length: int) -> None:
        """Append one request's cache (batch 1, ``length`` tokens) as the last row."""
        device = cache.layers[0].keys.device if cache.layers else None
        self.add_rows(cache, torch.ones((1, length), dtype=torch.long, device=device))

    def add_rows(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append the rows of ``cache`` (batch B, W columns, each row's padding on its left, as
        ``mask`` [B, W] says: 1 = real token) as the last rows, in order."""
        rows, length = int(mask.shape[0]), int(mask.shape[1])
        for layer in cache.layers:
            # Sliding-window layers drop old columns on their own, which would misalign the
            # padding of the rows; this batch handles full attention only.
            if type(layer) is not DynamicLayer:
                raise ValueError(f"batched decoding needs full-attention cache layers, got {type(layer).__name__}")
            if layer.keys.shape[0] != rows or layer.keys.shape[-2] != length:
                raise ValueError(f"expected a {rows}-row cache of {length} columns, got {tuple(layer.keys.shape)}")
        row_mask = mask.to(torch.long)
        row_length = row_mask.sum(dim=1)
        if self._cache is None:
            self._cache, self._mask, self._lengths = _growing(cache), row_mask, row_length
            return
        width = max(self.width, length)
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([left_pad(mine.keys, width), left_pad(theirs.keys, width)])
            mine.values = torch.cat([left_pad(mine.values, width), left_pad(theirs.values, width)])
        self._mask = torch.cat([_left_pad_mask(self._mask, width), _left_pad_mask(row_mask, width)])
        self._lengths = torch.cat([self._lengths, row_length])

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order); the others leave the batch now."""
        if len(rows) == len(self) and rows == sorted(rows):
            return
        if not rows:
            self._cache = self._mask = self._lengths = None
            return
        assert self._cache is not None and self._mask is not None and self._lengths is not None
        index = torch.tensor(rows, dtype=torch.long, device=self._mask.device)
        lengths = self._lengths.index_select(0, index)
        # Columns that are padding in every remaining row cost compute and carry nothing.
        trim = self.width - int(lengths.max())
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[..., trim:, :]
            layer.values = layer.values.index_select(0, index)[..., trim:, :]
        self._mask = self._mask.index_select(0, index)[:, trim:]
        self._lengths = lengths

    def decode(self, model: torch.nn.Module, tokens: list[int]) -> torch.Tensor:
        """Feed one new token per row; return the next-token logits [B, V]."""
        assert self._cache is not None and self._mask is not None and self._lengths is not None
        device = self._mask.device
        input_ids = torch.tensor(tokens, dtype=torch.long, device=device).unsqueeze(1)
        mask = torch.cat([self._mask, torch.ones((len(tokens), 1), dtype=torch.long, device=device)], dim=1)
        out = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=self._lengths.unsqueeze(1),
            cache=self._cache,
            use_cache=True,
        )
        # The forward appended one column to every layer of the cache, in place.
        self._cache = out.cache
        self._mask = mask
        self._lengths = self._lengths + 1
        return out.logits[:, -1, :]


def left_pad(states: torch.Tensor, width: int) -> torch.Tensor:
    """[B, H, T, D] -> [B, H, width, D], zeros on the left of the sequence axis."""
    missing = width - states.shape[-2]
    return states if missing == 0 else F.pad(states, (0, 0, missing, 0))


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return mask if missing == 0 else F.pad(mask, (missing, 0))
