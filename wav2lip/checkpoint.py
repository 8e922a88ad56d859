"""Load Wav2Lip generator weights from every format users actually have.

* Original training checkpoints (``wav2lip.pth``, ``wav2lip_gan.pth``): a dict
  ``{"state_dict", "optimizer", "global_step", "global_epoch"}`` written by torch 1.1, so in the
  legacy (pre-zip) serialisation, possibly with a DataParallel ``module.`` prefix.
* TorchScript archives (``Wav2Lip-SD-GAN.pt`` / ``-NOGAN.pt``, the current download links): a zip
  holding ``code/`` and ``constants.pkl``; we take ``torch.jit.load(...).state_dict()``.
* A bare state dict.

Everything else is refused with a message that says what the file holds. ``torch.load`` always
runs with ``weights_only=True``: it reads tensors, numbers and containers in both the zip and the
legacy format, and refuses arbitrary pickled objects.

The weights are the authors', under non-commercial terms; nothing here downloads them.
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from wav2lip.errors import Wav2LipCheckpointError
from wav2lip.model import Wav2Lip

logger = logging.getLogger(__name__)

LICENCE_NOTICE = (
    "Wav2Lip weights (Prajwal et al., trained on LRS2) are licensed for research/academic/"
    "personal, non-commercial use only; commercial use is prohibited by the authors. This "
    "program never downloads them: you supplied the file and are responsible for its terms."
)

# Keys that tell a generator apart from the other networks of the Wav2Lip repository.
_GENERATOR_MARKER = "audio_encoder.0.conv_block.0.weight"
_DISCRIMINATOR_MARKER = "binary_pred"
_SYNCNET_MARKER = "face_encoder.0.conv_block.0.weight"
_HQ256_MARKER = "face_encoder_blocks.7."
_NESTED_KEYS = ("state_dict", "model", "generator", "model_state_dict")


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    path: str
    container: str  # "training checkpoint" | "torchscript" | "state dict"
    global_step: int | None


def _is_torchscript_zip(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    # A TorchScript archive carries its code and constants; a torch.save zip carries data.pkl only.
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        shown = ", ".join(repr(k) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
        return f"a dict with {len(keys)} keys [{shown}]"
    return f"an object of type {type(obj).__name__}"


def _find_state_dict(obj: object, path: str) -> tuple[Mapping[str, torch.Tensor], str, int | None]:
    if not isinstance(obj, Mapping):
        raise Wav2LipCheckpointError(
            f"{path}: holds {_describe(obj)}, not a Wav2Lip checkpoint or state dict"
        )
    if all(isinstance(v, torch.Tensor) for v in obj.values()) and obj:
        return obj, "state dict", None
    for key in _NESTED_KEYS:
        inner = obj.get(key)
        if (
            isinstance(inner, Mapping)
            and inner
            and all(isinstance(v, torch.Tensor) for v in inner.values())
        ):
            step = obj.get("global_step")
            return inner, "training checkpoint", step if isinstance(step, int) else None
    raise Wav2LipCheckpointError(
        f"{path}: holds {_describe(obj)} but no generator weights "
        f"(expected a 'state_dict' entry or a flat dict of tensors)"
    )


def _normalise_keys(state: Mapping[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    cleaned = {k.removeprefix("module."): v for k, v in state.items()}
    if any(_DISCRIMINATOR_MARKER in k for k in cleaned):
        raise Wav2LipCheckpointError(
            f"{path}: this is a Wav2Lip discriminator checkpoint "
            f"(keys '{_DISCRIMINATOR_MARKER}.*'), not the generator; "
            "use wav2lip.pth / wav2lip_gan.pth / Wav2Lip-SD-*.pt"
        )
    if _SYNCNET_MARKER in cleaned:
        raise Wav2LipCheckpointError(
            f"{path}: this is a SyncNet lip-sync expert checkpoint (keys 'face_encoder.*'), "
            "used only for training; use the generator (wav2lip.pth / wav2lip_gan.pth)"
        )
    if any(k.startswith(_HQ256_MARKER) for k in cleaned):
        raise Wav2LipCheckpointError(
            f"{path}: this is the 256x256 Wav2Lip variant (has 'face_encoder_blocks.7.*'); "
            "only the published 96x96 generator is supported"
        )
    if _GENERATOR_MARKER not in cleaned:
        sample = ", ".join(list(cleaned)[:5])
        raise Wav2LipCheckpointError(
            f"{path}: a state dict with {len(cleaned)} tensors but no Wav2Lip generator weights "
            f"(first keys: {sample})"
        )
    return cleaned


def _read_state_dict(path: str) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    if not os.path.isfile(path):
        raise Wav2LipCheckpointError(f"{path}: no such file")
    if _is_torchscript_zip(path):
        try:
            # torch 2.13 deprecates TorchScript, but the currently published weights ship only
            # in this format and nothing else reads it; silence just that notice.
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore",
                    message=r".*torch\.jit\.load.* is deprecated",
                    category=DeprecationWarning,
                )
                scripted = torch.jit.load(path, map_location="cpu")
        except RuntimeError as exc:
            raise Wav2LipCheckpointError(
                f"{path}: a TorchScript archive that failed to load: {exc}"
            ) from exc
        state = {k: v for k, v in scripted.state_dict().items()}
        info = CheckpointInfo(path, "torchscript", None)
        return _normalise_keys(state, path), info
    with open(path, "rb") as fh:
        head = fh.read(16)
    # torch.save writes a zip ("PK") or, before torch 1.6, a pickle starting with PROTO (0x80).
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        raise Wav2LipCheckpointError(
            f"{path}: not a PyTorch file (starts with {head!r}; an HTML page from an expired "
            "download link?)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next(
            (line.strip() for line in str(exc).splitlines() if "Unsupported global" in line),
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        raise Wav2LipCheckpointError(
            f"{path}: holds pickled Python objects beyond tensors and plain containers; refusing "
            f"to unpickle it for safety ({detail})"
        ) from exc
    except (RuntimeError, EOFError, ValueError, IndexError, KeyError, OSError) as exc:
        # The legacy reader fails in varied ways on a cut-off file; all mean "not complete".
        raise Wav2LipCheckpointError(
            f"{path}: not a readable PyTorch file (truncated download?): {exc!r}"
        ) from exc
    state, container, step = _find_state_dict(obj, path)
    return _normalise_keys(state, path), CheckpointInfo(path, container, step)


def load_generator(path: str, device: str | torch.device = "cpu") -> tuple[Wav2Lip, CheckpointInfo]:
    """Build a ``Wav2Lip`` in eval mode on ``device`` with the weights of ``path`` (strict)."""
    logger.warning("Loading %s. %s", path, LICENCE_NOTICE)
    state, info = _read_state_dict(path)
    model = Wav2Lip()
    expected = model.state_dict()
    # Files saved without BN step counters (some re-exports) are still complete for inference.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise Wav2LipCheckpointError(
            f"{path}: keys do not match the Wav2Lip generator: {len(missing)} missing "
            f"({', '.join(missing[:4])}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:4])})"
        )
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise Wav2LipCheckpointError(
                f"{path}: tensor {key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(value.shape)}"
            )
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    model.eval().to(device)
    logger.info(
        "Wav2Lip(%s) loaded: %s, %d tensors, global_step=%s",
        os.path.basename(path),
        info.container,
        len(state),
        info.global_step,
    )
    return model, info
