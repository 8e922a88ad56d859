"""Next-token choice for a batch of rows, the way ``model.generate()`` makes it.

Repetition penalty is applied from a per-row "seen" mask over the vocabulary instead of from
padded ``input_ids``: rows of a batch have different lengths, and a pad id would be penalised
as if it had been said. The arithmetic is transformers' RepetitionPenaltyLogitsProcessor's,
so greedy choices match generate() with the same penalty. Sampling adds temperature, top-k
and top-p with transformers' own warpers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    repetition_penalty: float = 1.1
    # Whether the prompt's tokens count as already said (generate()'s way). Off, only the
    # answer's own repeats are penalised, so the answer may use the question's words.
    penalize_prompt: bool = True
    # generate()'s defaults when the model's generation_config sets none.
    top_k: int = 50
    top_p: float = 1.0


class Sampler:
    def __init__(self, sampling: Sampling, exempt_ids: frozenset[int] = frozenset()) -> None:
        self.sampling = sampling
        # Tokens the repetition penalty never touches: digits. SmolLM2 writes a number one
        # digit a token, so "100" repeats "0" and a penalised model wrote "10 divided by 10"
        # for "100 divided by 10" (bench/bench_answers.py, docs/llm.md).
        self._exempt_ids = sorted(exempt_ids)
        self._exempt: torch.Tensor | None = None
        self._warpers = []
        if sampling.temperature > 0:
            if sampling.top_k > 0:
                self._warpers.append(TopKLogitsWarper(sampling.top_k))
            if sampling.top_p < 1.0:
                self._warpers.append(TopPLogitsWarper(sampling.top_p))

    def penalize(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """Float32 scores with the repetition penalty applied. ``logits`` [B, V] (any float
        dtype); ``seen`` [B, V] bool marks the tokens already in each row's prompt or answer."""
        scores = logits.float()
        penalty = self.sampling.repetition_penalty
        if penalty == 1.0:
            return scores
        penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
        if self._exempt_ids:
            if self._exempt is None or self._exempt.shape[-1] != seen.shape[-1] or self._exempt.device != seen.device:
                exempt = torch.zeros(seen.shape[-1], dtype=torch.bool, device=seen.device)
                exempt[[i for i in self._exempt_ids if i < seen.shape[-1]]] = True
                self._exempt = exempt
            seen = seen & ~self._exempt
        return torch.where(seen, penalized, scores)

    def pick(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """One token id per row (see ``penalize`` for the arguments)."""
        scores = self.penalize(logits, seen)
        if self.sampling.temperature <= 0:
            return scores.argmax(dim=-1)
        scores = scores / self.sampling.temperature
        for warp in self._warpers:
            scores = warp(None, scores)  # these warpers look at the scores only
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, num_samples=1).squeeze(1)
