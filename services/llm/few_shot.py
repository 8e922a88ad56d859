"""Example exchanges put before the conversation, so a small model answers like them.

SmolLM2-135M follows examples far better than instructions: shown short, direct answers it
gives short, direct answers (bench/bench_answers.py measures it). The examples sit right after
the system prompt and never change, so they are part of the cached prompt prefix
(prefix_cache.py) and cost no prefill on any turn. None of them is a benchmark question.
"""

from __future__ import annotations

from services.llm.engine import ChatMessage

EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Hi there!", "Hello! It's nice to see you."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("What is 4 plus 3?", "4 plus 3 is 7."),
    ("What do we call a baby sheep?", "A baby sheep is called a lamb."),
)


def example_messages(examples: tuple[tuple[str, str], ...] = EXAMPLES) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    for question, answer in examples:
        out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return out
