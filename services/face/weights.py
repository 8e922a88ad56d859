"""Loading the S3FD weights safely: pinned sha256 first, then tensors only, then a strict match."""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import torch

from avatar_base.files import file_sha256
from services.face.errors import FETCH_HINT, DetectorWeightsError
from services.face.s3fd import S3FD
from services.fetch_manifest import UrlFile, entry_named

logger = logging.getLogger(__name__)

S3FD_ENTRY_NAME = "s3fd"


def s3fd_entry() -> UrlFile:
    """The manifest entry that says where ``fetch`` puts the weights and their sha256."""
    entry = entry_named(S3FD_ENTRY_NAME)
    if not isinstance(entry, UrlFile):
        raise TypeError(f"manifest entry {S3FD_ENTRY_NAME!r} should be a UrlFile, got {entry!r}")
    return entry


def s3fd_weights_path(models_dir: str | Path) -> Path:
    return Path(models_dir) / s3fd_entry().dest


def _reason(exc: BaseException) -> str:
    """The cause in torch's error, without its advice to retry with ``weights_only=False``."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return line.split(". Please", 1)[0][:200]


def load_s3fd(path: str | Path, device: str | torch.device, sha256: str | None) -> S3FD:
    """The S3FD network with the weights in ``path``, in eval mode on ``device``.

    ``sha256``: the expected hash (the manifest's), checked before anything is unpickled; None
    skips the check (a file the caller vouches for, e.g. a test's). Unpickling is restricted to
    tensors and plain containers (``weights_only=True``), so a doctored file cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise DetectorWeightsError(
            f"S3FD face detector weights {path} are missing; fetch them with: {FETCH_HINT}"
        )
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256.lower():
            raise DetectorWeightsError(
                f"S3FD face detector weights {path} are corrupted or not the published file "
                f"(sha256 {actual}, expected {sha256}); delete it and run: {FETCH_HINT}"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as exc:
        raise DetectorWeightsError(
            f"S3FD face detector weights {path} cannot be read as a tensor checkpoint "
            f"({_reason(exc)}); delete it and run: {FETCH_HINT}"
        ) from exc
    if not isinstance(state, dict):
        raise DetectorWeightsError(
            f"S3FD face detector weights {path} hold a {type(state).__name__}, not a state dict; "
            f"delete it and run: {FETCH_HINT}"
        )
    net = S3FD()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DetectorWeightsError(
            f"S3FD face detector weights {path} do not match the S3FD layers ({exc}); "
            f"delete it and run: {FETCH_HINT}"
        ) from exc
    logger.info("S3FD(%s): loaded on %s", path.name, device)
    return net.to(device).eval()
