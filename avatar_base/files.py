"""Files the models and their caches are made of: content digests and crash-safe writes.

A cache is keyed by the digest of what it was built from, and written under a temporary name
then renamed, so a crash never leaves a half-written file that a later start would trust.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

_BLOCK_BYTES = 1 << 20


def update_with_file(digest: "hashlib._Hash", path: str | Path) -> None:
    """Feed a file's bytes to ``digest`` a block at a time (model files are gigabytes)."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK_BYTES), b""):
            digest.update(block)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    update_with_file(digest, path)
    return digest.hexdigest()


def save_npz_atomically(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` via a temporary name in the same folder, then an atomic rename."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
