"""services/malloc_trim.py: freed heap pages go back to the OS (glibc), which is what keeps the
LLM's RSS from creeping between answers."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest

from services.malloc_trim import trim_heap


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.system() != "Linux" or not ctypes.util.find_library("c"), reason="glibc only")
def test_trimming_returns_the_freed_middle_of_the_heap():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 KiB blocks stay below glibc's mmap threshold, so they live in the heap; a small block
    # kept after each one leaves the freed blocks as holes that free() alone cannot hand back
    # (as the tensors of an answer are freed between longer-lived objects).
    blocks, pins = [], []
    for _ in range(1600):  # 100 MiB
        blocks.append(libc.malloc(64 * 1024))
        ctypes.memset(blocks[-1], 1, 64 * 1024)
        pins.append(libc.malloc(64))
    for b in blocks:
        libc.free(b)
    before = _rss_mib()
    assert trim_heap() is True
    after = _rss_mib()
    for p in pins:
        libc.free(p)
    assert before - after > 50, f"RSS {before:.0f} -> {after:.0f} MiB"
