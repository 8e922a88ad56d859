"""What the int8 and int4 linear layers share: low-bit weights for a few rows, bfloat16 for many.

A decode step multiplies one row per session and is bound by reading the weights, so fewer bits
win; a prefill multiplies many rows and is bound by arithmetic, where oneDNN's bfloat16 matmul
wins. Each layer keeps both copies and picks by the number of rows.
"""

from __future__ import annotations

import torch


class LowBitLinear(torch.nn.Module):
    """``y = x @ W.T + b``; subclasses store their low-bit W and implement ``few_rows``."""

    max_rows: int  # up to this many rows, ``few_rows``; above, the bfloat16 copy
    bits: str  # for the layer's repr

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.register_buffer("weight_bf16", linear.weight.detach().to(torch.bfloat16))
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)

    def few_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """``flat`` [rows, in] bfloat16 times the low-bit weights: [rows, out]."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        if flat.shape[0] <= self.max_rows:
            y = self.few_rows(flat)
        else:
            y = torch.nn.functional.linear(flat, self.weight_bf16)
        y = y.to(x.dtype).reshape(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.bits} weights"
