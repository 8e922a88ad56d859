"""Random-weight Wav2Lip checkpoints for tests: no test may download the real (non-commercial)
weights, and a random generator exercises exactly the same loading and inference paths."""

from __future__ import annotations

from pathlib import Path

import torch

from wav2lip.model import Wav2Lip


def save_random_checkpoint(path: Path, seed: int) -> Path:
    """A training-style checkpoint (``{"state_dict": ..., "global_step": ...}``) of a randomly
    initialised generator, the shape of the file most users download."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": Wav2Lip().state_dict(), "global_step": 1}, path)
    return path
