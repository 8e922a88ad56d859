"""The prompt variants of docs/llm.md's second round, on a split of bench_answers.

Each variant is the service's settings with a persona, an example list (few_shot.py's form) or
a repetition penalty changed; it runs on its own engine, one question at a time, greedy. Pick
on ``tune``, then report ``held-out``: never the other way round.

Usage::

    python -m bench.answer_variants tune                       # every variant, tune half
    python -m bench.answer_variants held-out "short persona"   # named variants, held-out half
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

import bench.bench_answers as ba
import services.llm.service as llm_service
import services.llm.transformers_engine as llm_engine
from bench.result_file import write_json
from services.llm import few_shot
from services.llm.settings import PERSONA_BEFORE_27, LlmSettings

V3 = few_shot.EXAMPLES
SHORT = "You are Ava, a friendly talking avatar. Answer in one or two short, plain sentences."


def in_system(examples: tuple[tuple[str, str], ...]) -> str:
    """The examples as text of the system prompt instead of chat turns."""
    return " Examples: " + " ".join(f'Q: "{q}" A: "{a}"' for q, a in examples)


VARIANTS: dict[str, dict[str, Any]] = {
    "previous default": dict(persona=PERSONA_BEFORE_27),
    "short persona": dict(persona=SHORT),
    "smol-style persona": dict(persona="You are a helpful AI assistant named Ava."),
    "examples in system": dict(persona=PERSONA_BEFORE_27 + in_system(V3), examples=()),
    "short + ex in system": dict(persona=SHORT + in_system(V3), examples=()),
    "no penalty": dict(persona=PERSONA_BEFORE_27, repetition_penalty=1.0),
    "short, no penalty": dict(persona=SHORT, repetition_penalty=1.0),
    "short2 (correct)": dict(persona="You are Ava, a friendly talking avatar. Give short, correct answers."),
    "short3 (one sentence)": dict(persona="You are Ava, a talking avatar. Answer in one short sentence."),
    "3 ex (hi,sum,conv)": dict(persona=PERSONA_BEFORE_27, examples=(V3[0], V3[2], V3[3], V3[4])),
    "2 ex (conv only)": dict(persona=PERSONA_BEFORE_27, examples=(V3[3], V3[4])),
    "short persona + 3ex": dict(persona=SHORT, examples=(V3[0], V3[2], V3[3], V3[4])),
    "terse answers": dict(persona=PERSONA_BEFORE_27, examples=(
        V3[0], ("What is the capital of Canada?", "Ottawa."), ("What is 6 plus 3?", "9."), V3[3],
        ("What do I like?", "Swimming."))),
    "answer first": dict(persona=PERSONA_BEFORE_27, examples=(
        V3[0], ("What is the capital of Canada?", "Ottawa. It is the capital of Canada."),
        ("What is 6 plus 3?", "9. 6 plus 3 is 9."), V3[3], ("What do I like?", "Swimming. You like to swim."))),
    # Third round (with the calculator): fewer example tokens, and small-talk wording.
    "no sum example": dict(examples=(V3[0], V3[1], V3[3], V3[4])),
    "no hi example": dict(examples=V3[1:]),
    "no capital example": dict(examples=(V3[0], V3[2], V3[3], V3[4])),
    "hi: happy to help": dict(examples=(("Hi!", "Hi! I'm happy to help."), *V3[1:])),
    "hi: happy to help, no sum": dict(examples=(("Hi!", "Hi! I'm happy to help."), V3[1], V3[3], V3[4])),
    "persona: cheerful": dict(persona=SHORT + " Be cheerful and helpful."),
}


def main(argv: list[str]) -> int:
    split, only = argv[0], argv[1:]
    base = dataclasses.replace(LlmSettings.from_env(), pace_tokens_per_s=0.0)
    if not any(label in VARIANTS for label in only):
        raise SystemExit(f"unknown variants {only}; known: {list(VARIANTS)}") if only else None
    items = ba.split_items(ba.load_items(), split)
    expect = {i.id: i.expect for i in items}
    report: dict[str, Any] = {}
    for label, change in VARIANTS.items():
        if only and label not in only:
            continue
        change = dict(change)
        examples = change.pop("examples", V3)
        settings = dataclasses.replace(base, **change, few_shot=bool(examples))
        chat = few_shot.example_messages(examples)
        # Both the engine (the cached prefix) and the service (the prompt) take the examples.
        llm_engine.example_messages = llm_service.example_messages = lambda chat=chat: chat  # type: ignore[assignment]
        results, _ = asyncio.run(ba.run(settings, items, "Ava", False))
        for r in results:
            r["right"] = ba.is_right(r["answer"], expect[r["id"]])
            r["starts_with_name"] = ba.starts_with_name(r["answer"], "Ava")
            r["sentences"] = ba.sentence_count(r["answer"])
        summary = ba.summarize(results)
        cats = ", ".join(f"{c} {100 * x:.0f}" for c, x in summary["per_category"].items())
        print(f"{label:<22} {split} {100 * summary['score']:5.1f} %  ({cats})", flush=True)
        for r in results:
            if not r["right"]:
                print(f"     wrong: {r['question']} -> {r['answer']!r}", flush=True)
        report[label] = {"summary": summary, "results": results}
    out = Path("bench-results") / f"answer-variants-{split}.json"
    write_json(out, report, indent=1)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["tune"]))
