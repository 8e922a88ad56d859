"""Which torch device a model runs on: the one reading of ``AVATAR_DEVICE`` (auto | cpu | cuda).

Every model loader calls ``pick_device`` (Wav2Lip, MuseTalk, the S3FD face detector, Coqui TTS,
the transformers LLM), so a wrong value fails the same clear way everywhere, before any weights
load, instead of deep inside a ``.to("cuda")``.
"""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bfloat16 runs natively (emulated bf16 would be slower than fp32)."""
    # torch.cpu exposes the CPUID probes it uses to pick oneDNN kernels.
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` takes the GPU when torch sees one, else the CPU.

    Raises ``ValueError`` for a name other than auto, cpu or cuda, and ``RuntimeError`` when
    cuda is asked for but torch sees no CUDA GPU (a CPU build of torch, or no GPU passed in).
    """
    if requested not in DEVICE_CHOICES:
        raise ValueError(f"device must be auto, cpu or cuda, not {requested!r}")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "device 'cuda' requested (AVATAR_DEVICE=cuda or --device cuda) but torch sees "
                "no CUDA GPU; use auto or cpu, or give the process a GPU"
            )
        return torch.device("cuda")
    return torch.device("cpu")
