"""Benchmark batched decoding on SmolLM2: first-token latency and tokens/s, 1 vs N sessions.

    python bench/bench_llm_batching.py [--sessions 1 3] [--tokens 32] [--repeats 3] [--threads 1]
                                       [--quant int4|int8|none]
                                       [--out bench-results/llm_batching.json]

For each session count, N questions arrive at the same moment and decode together; "queued"
replays them one after another, which is what the old one-lock engine did. "generate" is
``model.generate()`` alone on the first question, the old engine's single-session speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from services.llm.settings import DEFAULT_PERSONA, LlmSettings  # noqa: E402
from services.llm.transformers_engine import TransformersEngine  # noqa: E402
from services.llm.weight_quant import QUANT_MODES  # noqa: E402
from bench.result_file import write_json  # noqa: E402

QUESTIONS = [
    "Tell me a story about a dragon.", "Describe the ocean.", "What do you like about cities?",
    "Explain how rain forms.", "Tell me about the moon.", "What makes a good friend?",
    "Describe a forest in autumn.", "Why do cats purr?",
]


def chat(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": DEFAULT_PERSONA}, {"role": "user", "content": question}]


def run_together(engine: TransformersEngine, n: int, tokens: int) -> dict[str, float]:
    """N requests submitted at t0 and read on their own threads."""
    firsts: list[float] = [0.0] * n
    counts: list[int] = [0] * n
    prompts = [engine._template_ids(chat(q), add_generation_prompt=True) for q in QUESTIONS[:n]]
    t0 = time.perf_counter()

    def read(i: int) -> None:
        prefix_len = engine._prefix_len(chat(QUESTIONS[i]), prompts[i])
        for _ in engine.decoder.submit(prompts[i], prefix_len, tokens, lambda: False):
            if counts[i] == 0:
                firsts[i] = time.perf_counter() - t0
            counts[i] += 1

    threads = [threading.Thread(target=read, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    return {"first_token_ms_mean": 1000 * statistics.fmean(firsts), "first_token_ms_max": 1000 * max(firsts),
            "tokens": sum(counts), "wall_s": wall, "tokens_per_s": sum(counts) / wall}


def run_queued(engine: TransformersEngine, n: int, tokens: int) -> dict[str, float]:
    """The same N requests, each waiting for the previous answer to end (the old lock)."""
    firsts: list[float] = []
    total = 0
    t0 = time.perf_counter()
    for q in QUESTIONS[:n]:
        ids = engine._template_ids(chat(q), add_generation_prompt=True)
        first = True
        for _ in engine.decoder.submit(ids, engine._prefix_len(chat(q), ids), tokens, lambda: False):
            if first:
                firsts.append(time.perf_counter() - t0)
                first = False
            total += 1
    wall = time.perf_counter() - t0
    return {"first_token_ms_mean": 1000 * statistics.fmean(firsts), "first_token_ms_max": 1000 * max(firsts),
            "tokens": total, "wall_s": wall, "tokens_per_s": total / wall}


def run_generate(engine: TransformersEngine, tokens: int) -> dict[str, float]:
    ids = torch.tensor([engine._template_ids(chat(QUESTIONS[0]), add_generation_prompt=True)])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = engine._model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                     min_new_tokens=tokens, do_sample=False, repetition_penalty=1.1)
    wall = time.perf_counter() - t0
    made = out.shape[1] - ids.shape[1]
    return {"tokens": made, "wall_s": wall, "tokens_per_s": made / wall}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the service's default)")
    parser.add_argument("--quant", choices=list(QUANT_MODES), default=LlmSettings().quant,
                        help=f"weights of the CPU model (the service's default is {LlmSettings().quant})")
    parser.add_argument("--out", default="bench-results/llm_batching.json")
    args = parser.parse_args()
    if max(args.sessions) > len(QUESTIONS):
        parser.error(f"at most {len(QUESTIONS)} sessions")

    settings = LlmSettings.from_env({**os.environ, "AVATAR_LLM_THREADS": str(args.threads),
                                     "AVATAR_LLM_QUANT": args.quant})
    engine = TransformersEngine.from_settings(settings)
    try:
        result: dict[str, object] = {
            "model": settings.model or "SmolLM2-135M-Instruct", "device": engine._device,
            "torch_threads": torch.get_num_threads(), "quant": engine.quant,
            "max_new_tokens": args.tokens,
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "generate": median_of([run_generate(engine, args.tokens) for _ in range(args.repeats)]),
        }
        print(f"generate() alone: {result['generate']['tokens_per_s']:.1f} tokens/s")
        for n in args.sessions:
            together = median_of([run_together(engine, n, args.tokens) for _ in range(args.repeats)])
            queued = median_of([run_queued(engine, n, args.tokens) for _ in range(args.repeats)])
            result[f"sessions_{n}"] = {"together": together, "queued": queued}
            for name, r in (("together", together), ("queued", queued)):
                print(f"{n} sessions {name:8s}: first token mean {r['first_token_ms_mean']:.0f} ms, "
                      f"max {r['first_token_ms_max']:.0f} ms; {r['tokens_per_s']:.1f} tokens/s in all "
                      f"({r['tokens']:.0f} tokens in {r['wall_s']:.2f} s)")
    finally:
        engine.close()
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
