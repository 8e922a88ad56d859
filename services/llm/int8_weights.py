"""Weight-only int8 linear layers for decoding on the CPU, bfloat16 for prefill.

One token of SmolLM2-135M in float32 reads all 540 MB of its weights, so on one core its decode
is bound by memory bandwidth: 56-62 ms a token measured here. Stored as int8 with one scale per
output channel, the same weights are a quarter of the bytes, and torch's CPU kernel
``_weight_int8pack_mm`` multiplies bfloat16 activations by them directly: 19 ms a token.

A prefill is the other case: many rows at once, bound by arithmetic, where that kernel is slow
(80 rows through a 576x1536 layer: int8 1040 us, float32 1531 us, bfloat16 386 us, measured on
one core here). So each layer also keeps its weights in bfloat16 and uses them above a few
rows. Both copies together are smaller than the float32 weights were.

Only the weights are rounded; activations stay floating point. Dynamic int8 quantization of
activations too (torch.ao's ``quantize_dynamic``) was faster still (17 ms a token) but broke
the answers ("The spider has 18 legs."), while weight-only int8 gave the float32 answer word
for word on most questions: the packaged model is itself a 4-bit GGUF, so 8 bits per channel
keep everything it has. Compare with ``python bench/bench_llm_batching.py --quant int8`` and
``--quant none``.
"""

from __future__ import annotations

import logging

import torch

from services.llm.lowbit_linear import LowBitLinear

logger = logging.getLogger(__name__)

# Up to this many rows (tokens of one batched decode step) the int8 kernel wins; above it the
# bfloat16 matmul does (crossover measured between 4 and 8 rows).
INT8_MAX_ROWS = 4


class Int8Linear(LowBitLinear):
    """W as int8 rows and one bfloat16 scale per row (output channel) for a few rows, and W in
    bfloat16 for many (lowbit_linear.py)."""

    max_rows = INT8_MAX_ROWS
    bits = "int8"

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__(linear)
        weight = linear.weight.detach().float()
        # Symmetric per-channel scale: the largest |w| of each row maps to 127.
        scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))

    def few_rows(self, flat: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(flat, self.weight_int8, self.scale)


def int8_supported() -> bool:
    """Whether this torch build runs the int8 kernel on the CPU (it is a private op)."""
    try:
        x = torch.ones(1, 32, dtype=torch.bfloat16)
        w = torch.ones(8, 32, dtype=torch.int8)
        y = torch._weight_int8pack_mm(x, w, torch.ones(8, dtype=torch.bfloat16))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return bool(torch.allclose(y.float(), torch.full((1, 8), 32.0)))


def quantize_linears(model: torch.nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``model`` (the LM head too) in place; returns how many.

    A tied LM head gets its own int8 copy; the embedding lookup keeps the float table, which
    costs nothing per token (one row is read).
    """
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, Int8Linear(child))
                replaced += 1
    return replaced
