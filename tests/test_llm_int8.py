"""Weight-only int8 on the CPU (services/llm/int8_weights.py): each layer is close to its float
original, the real SmolLM2 predicts the same next tokens as in float32 along a float32 answer,
it is the CPU default and is never applied on a GPU or to a non-float32 model."""

from __future__ import annotations

import pytest
import torch

from services.llm.int8_weights import Int8Linear, int8_supported, quantize_linears
from services.llm.weight_quant import apply_quant
from services.llm.settings import LlmSettings
from services.llm.transformers_engine import TransformersEngine, converted_smollm2
from tests.quantized_llm import assert_layer_close, teacher_forced_agreement

needs_int8 = pytest.mark.skipif(not int8_supported(), reason="this torch build has no CPU int8 matmul")


@needs_int8
def test_int8_linear_is_close_to_the_float_layer_for_any_leading_shape():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40, bias=True)
    q = Int8Linear(linear)
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.shape == (40, 96)
    # bf16 activations and 8-bit weights: about 1% of the output's scale, never 10%.
    assert_layer_close(linear, q, 0.05, ((96,), (3, 96), (2, 5, 96)))


@needs_int8
def test_quantize_replaces_every_linear_including_the_lm_head():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )).eval()
    ids = torch.tensor([[1, 5, 9, 33, 70]])
    with torch.inference_mode():
        want = model(input_ids=ids).logits
    # 7 per layer (q, k, v, o, gate, up, down) + the head.
    assert quantize_linears(model) == 2 * 7 + 1
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    with torch.inference_mode():
        got = model(input_ids=ids).logits
    cos = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0)
    assert cos > 0.99


def test_int8_is_for_float32_on_the_cpu_only():
    layer = torch.nn.Sequential(torch.nn.Linear(8, 8))
    assert apply_quant(layer, "none", "cpu", torch.float32) == "none"
    assert apply_quant(layer, "int8", "cuda", torch.float16) == "none"
    assert apply_quant(layer, "int8", "cpu", torch.bfloat16) == "none"
    assert isinstance(layer[0], torch.nn.Linear)
    with pytest.raises(ValueError, match="unknown LLM quantization"):
        apply_quant(layer, "int3", "cpu", torch.float32)
    assert LlmSettings.from_env({}).quant == "int4"
    assert LlmSettings.from_env({"AVATAR_PROFILE": "gpu"}).quant == "none"
    assert LlmSettings.from_env({"AVATAR_LLM_QUANT": "none"}).quant == "none"


@needs_int8
@pytest.mark.slow
def test_smollm2_int8_predicts_the_float32_tokens_along_a_float32_answer():
    """Teacher-forced on float32's greedy answers: int8's top token agrees almost everywhere
    (exact equality would hang on near-ties, which differ between CPUs)."""
    torch.set_num_threads(1)
    folder = str(converted_smollm2(LlmSettings.from_env().cache_dir))
    fp32 = TransformersEngine(folder, "float32", "cpu", max_new_tokens=4, persona="", quant="none")
    int8 = TransformersEngine(folder, "float32", "cpu", max_new_tokens=4, persona="", quant="int8")
    try:
        assert (fp32.quant, int8.quant) == ("none", "int8")
        agree, total = teacher_forced_agreement(fp32, int8)
        assert total >= 30
        assert agree / total >= 0.9, f"int8 agreed with float32 on {agree}/{total} tokens"
    finally:
        fp32.close()
        int8.close()
