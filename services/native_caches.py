"""Bound the per-shape caches of torch's oneDNN (mkldnn) kernels in every service process.

Why: a bfloat16 matmul on the CPU goes through oneDNN, and two caches keep what it built for
each distinct input shape: oneDNN's primitive cache (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``) and
ideep's computation cache in front of it (``LRU_CACHE_CAPACITY``), 1024 entries each by default.
An LLM prefill has a new row count almost every turn, so both fill with one-off entries and the
process only grows: 400 prefill lengths through SmolLM2-sized layers took a process from 229 to
998 MiB (863 after malloc_trim), and the 30-minute soak's LLM crept up for the whole run. With
32 entries each the same loop ends at 253 MiB, in the same time (2.9 s against 3.0 s).
Decode steps reuse a handful of shapes (one per batch size
and layer shape), which 32 entries still hold. Measured with /proc VmRSS; reproduced by
tests/test_native_caches.py.

Both libraries read the variables when they first build a kernel, not when torch is imported,
so this only has to run before the first matmul. ``services/__init__.py`` calls it, which every
service process imports first. A value already set in the environment wins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

CACHE_ENTRIES = 32
VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_native_caches(env: MutableMapping[str, str] | None = None, entries: int = CACHE_ENTRIES) -> None:
    """Set both cache capacities in ``env`` (the process environment) unless already set."""
    target = os.environ if env is None else env
    for name in VARIABLES:
        target.setdefault(name, str(entries))
