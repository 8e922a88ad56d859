"""4-bit weights on the CPU (services/llm/int4_weights.py): Q4_1-style blocks are packed without
loss, other weights are left alone (and become int8 through weight_quant.apply_quant), and on the
real packaged SmolLM2 every layer but the Q8_0 head packs and the next tokens follow float32."""

from __future__ import annotations

import pytest
import torch

from services.llm.int4_weights import GROUP, Int4Linear, four_bit_blocks, int4_supported, quantize_linears_int4
from services.llm.int8_weights import Int8Linear
from services.llm.settings import LlmSettings
from services.llm.transformers_engine import TransformersEngine, converted_smollm2
from tests.quantized_llm import assert_layer_close, teacher_forced_agreement
from services.llm.weight_quant import apply_quant

needs_int4 = pytest.mark.skipif(not int4_supported(), reason="this torch build has no CPU int4 matmul")


def q4_1_linear(out_features: int, in_features: int, seed: int = 0, bias: bool = False) -> torch.nn.Linear:
    """A linear layer whose weights are what a Q4_1 GGUF dequantizes to: per block of 32
    inputs, d * q + m with float16 d and m and q in 0..15. As GGUF's Q4_1 quantizer makes them,
    m is the block's smallest weight (q = 0) and m + 15 d its largest (q = 15)."""
    g = torch.Generator().manual_seed(seed)
    blocks = in_features // GROUP
    q = torch.randint(0, 16, (out_features, blocks, GROUP), generator=g).float()
    q[..., 0], q[..., -1] = 0, 15
    d = (torch.rand(out_features, blocks, 1, generator=g) * 0.02 + 0.001).half().float()
    m = (-torch.rand(out_features, blocks, 1, generator=g) * 0.1).half().float()
    linear = torch.nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        linear.weight.copy_((d * q + m).reshape(out_features, in_features))
    return linear


def test_four_bit_blocks_recovers_q4_1_levels_and_refuses_other_weights():
    linear = q4_1_linear(32, 64)
    q, d, m = four_bit_blocks(linear.weight)
    assert q.dtype == torch.int32 and int(q.min()) >= 0 and int(q.max()) <= 15
    rebuilt = (d[..., None] * q.reshape(32, 2, GROUP).float() + m[..., None]).reshape(32, 64)
    assert torch.allclose(rebuilt, linear.weight, atol=1e-6)
    # Ordinary float weights (a model that never was 4-bit) have far more than 16 levels.
    assert four_bit_blocks(torch.nn.Linear(64, 32).weight) is None
    # Inputs that are not whole blocks cannot be packed.
    assert four_bit_blocks(torch.zeros(16, 40)) is None
    # The kernel packs output features in multiples of 16.
    assert four_bit_blocks(q4_1_linear(24, 64).weight) is None
    # A constant block (all weights equal) is 4-bit too.
    assert four_bit_blocks(torch.full((16, 32), 0.25)) is not None


@needs_int4
def test_int4_linear_matches_the_float_layer_up_to_bfloat16_for_any_leading_shape():
    linear = q4_1_linear(48, 96, bias=True)
    packed = Int4Linear(linear, four_bit_blocks(linear.weight))
    # Only bfloat16 rounding (activations, scale and zero): well under 1 % of the output.
    # 20 rows go through the bfloat16 prefill path.
    assert_layer_close(linear, packed, 0.01, ((96,), (3, 96), (2, 5, 96), (20, 96)))


@needs_int4
def test_apply_int4_packs_4_bit_layers_and_makes_the_rest_int8():
    model = torch.nn.Sequential(q4_1_linear(32, 64), torch.nn.Linear(32, 64), q4_1_linear(16, 64, seed=1))
    assert apply_quant(model, "int4", "cpu", torch.float32) == "int4"
    assert [type(m) for m in model] == [Int4Linear, Int8Linear, Int4Linear]
    # No 4-bit layer at all: the mode in use is int8, and it says so.
    plain = torch.nn.Sequential(torch.nn.Linear(64, 16))
    assert apply_quant(plain, "int4", "cpu", torch.float32) == "int8"
    assert isinstance(plain[0], Int8Linear)
    assert quantize_linears_int4(torch.nn.Sequential(torch.nn.Linear(64, 16))) == 0
    # Never on a GPU model or a non-float32 one.
    gpu = torch.nn.Sequential(q4_1_linear(16, 32))
    assert apply_quant(gpu, "int4", "cuda", torch.float16) == "none"
    assert isinstance(gpu[0], torch.nn.Linear)


@needs_int4
@pytest.mark.slow
def test_packaged_smollm2_packs_every_layer_but_the_head_and_follows_float32():
    """Teacher-forced on float32's greedy answers, int4's top token agrees almost everywhere
    (the same bound as the int8 test; exact equality would hang on near-ties)."""
    torch.set_num_threads(1)
    folder = str(converted_smollm2(LlmSettings.from_env().cache_dir))
    fp32 = TransformersEngine(folder, "float32", "cpu", max_new_tokens=4, persona="", quant="none")
    int4 = TransformersEngine(folder, "float32", "cpu", max_new_tokens=4, persona="", quant="int4")
    try:
        assert int4.quant == "int4"
        kinds = [type(m) for m in int4._model.modules() if isinstance(m, (Int4Linear, Int8Linear))]
        # 30 layers x 7 projections are the GGUF's Q4_1 tensors; the head is its Q8_0 embedding.
        assert kinds.count(Int4Linear) == 210 and kinds.count(Int8Linear) == 1
        agree, total = teacher_forced_agreement(fp32, int4)
        assert total >= 30
        assert agree / total >= 0.9, f"int4 agreed with float32 on {agree}/{total} tokens"
    finally:
        fp32.close()
        int4.close()
