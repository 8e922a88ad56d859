"""Checks shared by the int8 and int4 weight tests: a quantized layer against its float one, and
how often a quantized SmolLM2 picks float32's next token along float32's own greedy answers.

Teacher-forced: exact equality of whole answers would hang on near-ties, which differ between
CPUs. The quantized model is fed one token at a time, as decode steps are (few rows: the
low-bit kernels, not the bfloat16 prefill path).
"""

from __future__ import annotations

import torch

from services.llm.settings import DEFAULT_PERSONA
from services.llm.transformers_engine import TransformersEngine

def assert_layer_close(linear: torch.nn.Module, quantized: torch.nn.Module, rel_tol: float,
                       shapes: tuple[tuple[int, ...], ...]) -> None:
    """Same output shape and dtype as the float layer for any leading shape, within
    ``rel_tol`` of the output's largest magnitude."""
    for shape in shapes:
        x = torch.randn(*shape)
        want, got = linear(x), quantized(x)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert (got - want).abs().max() < rel_tol * want.abs().max()


QUESTIONS = ("How many legs does a spider have?", "What is the weather like today?", "Tell me about the sea.")


def teacher_forced_agreement(fp32: TransformersEngine, quantized: TransformersEngine,
                             answer_tokens: int = 24) -> tuple[int, int]:
    """(tokens where both agree, tokens compared) over QUESTIONS."""
    agree = total = 0
    for question in QUESTIONS:
        chat = [{"role": "system", "content": DEFAULT_PERSONA}, {"role": "user", "content": question}]
        ids = torch.tensor([fp32._template_ids(chat, add_generation_prompt=True)])
        with torch.inference_mode():
            answer = fp32._model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=answer_tokens,
                                          do_sample=False)
            want = fp32._model(input_ids=answer).logits[0, ids.shape[1] - 1:-1].argmax(-1)
            cache, got = None, []
            for t in range(answer.shape[1] - 1):
                out = quantized._model(input_ids=answer[:, t:t + 1], cache=cache, use_cache=True)
                cache = out.cache
                if t >= ids.shape[1] - 1:
                    got.append(int(out.logits[0, -1].argmax()))
        agree += int((want == torch.tensor(got)).sum())
        total += int(want.numel())
    return agree, total
