"""services/malloc_trim.py: freed heap pages go back to the OS (glibc), which is what keeps the
LLM's RSS from creeping between answers."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest

from services.malloc_trim import trim_heap
from tests.memory import rss_mb


@pytest.mark.skipif(platform.system() != "Linux" or not ctypes.util.find_library("c"), reason="glibc only")
def test_trimming_returns_the_freed_middle_of_the_heap():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 KiB blocks stay below glibc's mmap threshold, so they live in the heap. Every other
    # block stays allocated, so each freed one is a hole between live blocks that free() cannot
    # merge into the heap's top and hand back (as an answer's tensors are freed between
    # longer-lived objects). A small block kept after each one did not do this reliably: malloc
    # may serve it from an old free chunk elsewhere, and then the blocks merge into the top.
    blocks = [libc.malloc(64 * 1024) for _ in range(3200)]  # 200 MiB
    for b in blocks:
        ctypes.memset(b, 1, 64 * 1024)
    pins, holes = blocks[1::2], blocks[0::2]
    for b in holes:  # 100 MiB
        libc.free(b)
    before = rss_mb()
    assert trim_heap() is True
    after = rss_mb()
    for p in pins:
        libc.free(p)
    assert before - after > 50, f"RSS {before:.0f} -> {after:.0f} MiB"
