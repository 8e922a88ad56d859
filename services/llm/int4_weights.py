"""4-bit weights for decoding on the CPU: the packaged model's own 4-bit blocks, exactly.

The embedded SmolLM2 ships as a Q4_1 GGUF: every linear layer's weights are blocks of 32
consecutive inputs, each block ``w = d * q + m`` with ``q`` in 0..15 (checked with the gguf
reader: all 210 linear tensors are Q4_1; only the token embedding, which the LM head shares, is
Q8_0). Converting the GGUF to a float folder keeps those values, so the float weights hold
exactly 16 levels per block, and torch's CPU kernel ``_weight_int4pack_mm_for_cpu``, which
computes ``(q - 8) * scale + zero`` per group of 32 inputs, can take them back without loss
(``scale = d``, ``zero = m + 8 d``, rounded to bfloat16 as the kernel requires).

Why: a decode step reads every weight once, and on this machine that read is what costs. All
210 layer matmuls of one step (cold cache, one core, measured with random weights of the real
shapes): int8 23.0 ms, int4 8.9 ms at one row; 26.9 vs 12.2 ms at three rows (three sessions).

A layer whose weights are not 16 levels per 32-block (another model, the Q8_0 head) is left as
it is here; ``quantize_linears_int4`` reports which layers it packed, and the caller quantizes
the rest to int8 (int8_weights.py). Like Int8Linear, each layer keeps bfloat16 weights for
prefills, where many rows make the matmul arithmetic-bound and oneDNN's bfloat16 wins.
"""

from __future__ import annotations

import logging

import torch

from services.llm.lowbit_linear import LowBitLinear

logger = logging.getLogger(__name__)

GROUP = 32  # inputs per block: GGUF's Q4_0/Q4_1 block size, and a group size the kernel takes
OUT_MULTIPLE = 16  # the kernel's packing takes output features in multiples of 16
# Up to this many rows the int4 kernel wins (hot-cache crossover 6-8 rows on a 1536x576 layer;
# with weights coming from memory, as in a real step, int4 wins by more).
INT4_MAX_ROWS = 8
# A block counts as 4-bit when every weight is within this fraction of a level of its level.
# Exact Q4_1 values come back within float32 rounding (~1e-6 of a level).
_LEVEL_TOLERANCE = 1e-3


def int4_supported() -> bool:
    """Whether this torch build has the CPU int4 kernels and they compute what we assume."""
    try:
        q = torch.arange(16, dtype=torch.int32).repeat(OUT_MULTIPLE, 2)  # [16, 32]
        packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
        scale_zero = torch.tensor([1.0, 0.0]).repeat(1, OUT_MULTIPLE, 1).to(torch.bfloat16)  # [1, 16, 2]
        y = torch._weight_int4pack_mm_for_cpu(torch.ones(1, 32, dtype=torch.bfloat16), packed, GROUP, scale_zero)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    # Each row holds 0..15 twice: sum of (q - 8) = 2 * (120 - 128) = -16.
    return bool(torch.allclose(y.float(), torch.full((1, OUT_MULTIPLE), -16.0)))


def four_bit_blocks(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(q [N, K] int32 in 0..15, d [N, K/32], m [N, K/32])`` with ``weight == d * q + m`` per
    block, or None when the weight is not 16 levels per block of 32 inputs."""
    out_features, in_features = weight.shape
    if in_features % GROUP or out_features % OUT_MULTIPLE:
        return None
    blocks = weight.detach().float().reshape(out_features, in_features // GROUP, GROUP)
    low = blocks.amin(dim=-1)
    step = (blocks.amax(dim=-1) - low) / 15.0
    # A constant block has step 0: any q with that low value reproduces it.
    safe = torch.where(step > 0, step, torch.ones_like(step))
    levels = (blocks - low[..., None]) / safe[..., None]
    q = torch.round(levels).clamp(0, 15)
    if float((levels - q).abs().max()) > _LEVEL_TOLERANCE:
        return None
    return q.to(torch.int32).reshape(out_features, in_features), step, low


class Int4Linear(LowBitLinear):
    """W packed as 4-bit blocks for a few rows, bfloat16 for many (lowbit_linear.py)."""

    max_rows = INT4_MAX_ROWS
    bits = "4-bit"

    def __init__(self, linear: torch.nn.Linear, blocks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        super().__init__(linear)
        q, step, low = blocks
        self.register_buffer("weight_int4", torch._convert_weight_to_int4pack_for_cpu(q, 1))
        # The kernel's layout: [K/32, N, 2] of (scale, zero), with w = (q - 8) * scale + zero.
        scale_zero = torch.stack([step, low + 8.0 * step], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("scale_zero", scale_zero.to(torch.bfloat16))

    def few_rows(self, flat: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(flat, self.weight_int4, GROUP, self.scale_zero)


def quantize_linears_int4(model: torch.nn.Module) -> int:
    """Pack every ``nn.Linear`` whose weights are 4-bit blocks (in place); returns how many.

    Layers that are not (SmolLM2's LM head, tied to its Q8_0 embedding) stay ``nn.Linear`` for
    the caller to handle.
    """
    packed = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            blocks = four_bit_blocks(child.weight)
            if blocks is not None:
                setattr(module, name, Int4Linear(child, blocks))
                packed += 1
    return packed
