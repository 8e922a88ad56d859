"""Which weight format the LLM decodes with on the CPU: ``none``, ``int8`` or ``int4``.

- ``int8`` (int8_weights.py): every linear layer as int8, one scale per output channel. Close to
  the float weights for any model.
- ``int4`` (int4_weights.py, the CPU default): layers whose weights are 4-bit blocks (the
  packaged SmolLM2 is a Q4_1 GGUF) go back to exactly those 4 bits; every other layer (its LM
  head, or all layers of a model that never was 4-bit) is int8 as above. So it never rounds a
  weight more than ``int8`` does.

Both are for float32 models on the CPU: on CUDA the model is float16 and its matmuls are not
what limits decoding.
"""

from __future__ import annotations

import logging

import torch

from services.llm.int4_weights import int4_supported, quantize_linears_int4
from services.llm.int8_weights import int8_supported, quantize_linears

logger = logging.getLogger(__name__)

QUANT_MODES = ("none", "int8", "int4")


def apply_quant(model: torch.nn.Module, mode: str, device: str, dtype: torch.dtype) -> str:
    """Quantize as asked where it applies; returns the mode actually in use."""
    if mode not in QUANT_MODES:
        raise ValueError(f"unknown LLM quantization {mode!r}; expected one of {QUANT_MODES}")
    if mode == "none":
        return "none"
    if device != "cpu" or dtype != torch.float32:
        logger.info("LLM %s weights apply to float32 on the CPU only; %s on %s stays as it is", mode, dtype, device)
        return "none"
    if not int8_supported():
        logger.warning("this torch build has no CPU int8 matmul; the LLM runs in float32")
        return "none"
    packed = 0
    if mode == "int4":
        if int4_supported():
            packed = quantize_linears_int4(model)
        else:
            logger.warning("this torch build has no CPU int4 matmul; the LLM uses int8 weights")
    rest = quantize_linears(model)
    logger.info("LLM: %d linear layers hold 4-bit weights, %d int8", packed, rest)
    if mode == "int4" and packed == 0:
        return "int8"
    return mode
