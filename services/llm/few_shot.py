"""Example exchanges put before the conversation, so a small model answers like them.

SmolLM2-135M follows examples far better than instructions: shown short, direct answers it
gives short, direct answers (bench/bench_answers.py measures it: these five scored 68.3 %
against 65.0 % for eight, which added a car's wheels, snow's colour and scissors, with the
first clause no later; docs/llm.md). The examples sit right after
the system prompt and never change, so they are part of the cached prompt prefix
(prefix_cache.py) and cost no prefill on any turn. None of them is a benchmark question.
"""

from __future__ import annotations

from services.llm.engine import ChatMessage

EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Hi!", "Hello! How can I help you?"),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What is 6 plus 3?", "6 plus 3 is 9."),
    # The last examples use the conversation: a small model copies the last answer's topic
    # (with a fact last, it answered "a lamb" to half the questions), not its form.
    ("I like to swim.", "Swimming is fun!"),
    ("What do I like?", "You like to swim."),
)


def example_messages(examples: tuple[tuple[str, str], ...] = EXAMPLES) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    for question, answer in examples:
        out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return out
