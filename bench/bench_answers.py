"""Answer quality of the LLM stage: does the avatar say the right thing to simple questions?

Every question of ``bench/data/answers.json`` (facts, arithmetic, everyday knowledge, small
talk, follow-ups that need the conversation) goes through the real LLM service code: an
``LlmService`` with the configured engine builds the prompt (persona, history, question),
decodes and cuts the answer into clauses exactly as in production; the clauses it sends to
TTS are joined into the answer that is scored. An answer is right when it contains, as whole
words, at least one alternative of every expected group. It also counts two faults of form:
answers that start with the avatar's name and answers longer than two sentences.

The first-clause latency runs from the request entering the service to its first clause
leaving for TTS, one question at a time on an idle engine; the median is reported.

Usage::

    python -m bench.bench_answers [--out bench-results/answers.json] [--limit N] [--show]
    python -m bench.bench_answers --llm-url http://127.0.0.1:8081/v1   # an OpenAI-compatible server
    python -m bench.bench_answers --paired-few-shot   # few-shot examples on/off, question by question
    python -m bench.bench_answers --paired-baseline   # the settings before issue 27 against today's
    python -m bench.bench_answers --vs quant=none     # today's settings against one changed field
    python -m bench.bench_answers --split tune        # half of the questions (or held-out: the other half)
    python -m bench.bench_answers --vs calculator=0 --category arithmetic   # one category only

Settings come from the environment like the service's (AVATAR_PERSONA, AVATAR_LLM_*), except
pacing, which is off (``--pace`` keeps it): it only slows tokens after the first clause, so it
changes neither the answer nor the first clause, only how long the run takes.

Baseline (2026-12-06, before issue 27's tuning, SmolLM2-135M int4, one thread, 2-core machine
shared with other work so latencies are noisy): 40/60 = 66.7 % (facts 64.3, arithmetic 66.7,
everyday 57.1, small talk 70.0, follow-up 80.0); first clause median 222 ms; 4 answers start
with the name, 19 are longer than two sentences (``python -m bench.bench_answers --label baseline``).
After it (``--paired-baseline`` on a quiet machine): 71.7 % (tune half 80.0, held-out half
63.3) with none longer than two sentences or starting with the name, against 66.7 % for the
old settings in the same run; first clause median 294 against 265 ms. With the calculator
(services/llm/calculator.py) and digits exempt from the repetition penalty, 2026-12-07, quiet:
44/60 = 73.3 % (tune 83.3, held-out 63.3; facts 71.4, arithmetic 83.3, everyday 57.1, small
talk 70.0, follow-up 90.0), first clause median 171 ms (``--show``); ``--paired-baseline``:
73.3 against 66.7 %, first clause median 191 against 171 ms (per-question ratio 1.10).
docs/llm.md has the per-category figures, the variants tried and the first-clause comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.hardware import hardware
from bench.result_file import write_json
from services import messages
from services.llm.engines import build_engine
from services.llm.service import LlmService
from services.llm.settings import PERSONA_BEFORE_27, LlmSettings, llm_overrides

DATA = Path(__file__).parent / "data" / "answers.json"
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"[.!?]+(?:\s|$)")


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    id: str
    category: str
    question: str
    expect: tuple[tuple[str, ...], ...]
    history: tuple[dict[str, str], ...] = ()


def load_items(path: Path = DATA) -> list[Item]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        Item(
            id=raw["id"], category=raw["category"], question=raw["question"],
            expect=tuple(tuple(group) for group in raw["expect"]),
            history=tuple(raw.get("history", ())),
        )
        for raw in data["items"]
    ]


# Tuning looks at the "tune" half only; the "held-out" half says whether a change generalises.
SPLITS = ("all", "tune", "held-out")


def split_items(items: list[Item], split: str) -> list[Item]:
    """Every other question of each category: index 0, 2, 4... of a category is "tune",
    1, 3, 5... is "held-out" (so both halves hold every category)."""
    if split == "all":
        return items
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    seen: dict[str, int] = defaultdict(int)
    out = []
    for item in items:
        n = seen[item.category]
        seen[item.category] += 1
        if (n % 2 == 0) == (split == "tune"):
            out.append(item)
    return out


def parse_overrides(text: str, base: LlmSettings) -> dict[str, Any]:
    """``quant=none,few_shot=0`` -> settings fields, each typed like ``base``'s."""
    out: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not hasattr(base, key):
            raise ValueError(f"--vs wants FIELD=VALUE with a field of LlmSettings, got {part!r}")
        kind = type(getattr(base, key))
        out[key] = value.strip() in ("1", "true", "yes") if kind is bool else kind(value.strip())
    return out


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("'", ""))


def contains_phrase(answer_words: list[str], phrase: str) -> bool:
    """``phrase`` (one or more words) occurs in ``answer_words`` as whole words."""
    target = words(phrase)
    n = len(target)
    return n > 0 and any(answer_words[i:i + n] == target for i in range(len(answer_words) - n + 1))


def is_right(answer: str, expect: tuple[tuple[str, ...], ...]) -> bool:
    answer_words = words(answer)
    return all(any(contains_phrase(answer_words, alt) for alt in group) for group in expect)


def starts_with_name(answer: str, name: str) -> bool:
    return bool(name) and words(answer)[:1] == [name.lower()]


def sentence_count(answer: str) -> int:
    return len([s for s in _SENTENCE.split(answer.strip()) if s.strip()])


class _Capture:
    """Stands in for the service's ZeroMQ senders: keeps what the service sends, and when."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.at: list[float] = []

    async def send(self, msg: Any) -> None:
        self.sent.append(msg)
        self.at.append(time.monotonic())

    def clear(self) -> None:
        self.sent.clear()
        self.at.clear()


async def ask(service: LlmService, out: _Capture, events: _Capture, item: Item, n: int) -> dict[str, Any]:
    out.clear()
    events.clear()
    msg = messages.UserText(f"bench-{n}", 1, item.question, "typed", 0.0, json.dumps(list(item.history)))
    started = time.monotonic()
    await service._answer(msg)  # the service's whole turn, without the lane plumbing
    total_ms = (time.monotonic() - started) * 1000
    clauses = [m.text for m in out.sent if isinstance(m, messages.TextChunk) and m.text]
    # Timed here, not from the service's own event: that one is not sent when the whole answer
    # is one clause that leaves at the end of generation.
    first = next((at for m, at in zip(out.sent, out.at) if isinstance(m, messages.TextChunk) and m.text), None)
    timings = {m.name: m.ms for m in events.sent if isinstance(m, messages.StageTiming)}
    errors = [m.message for m in events.sent if isinstance(m, messages.StageError)]
    return {
        "id": item.id, "category": item.category, "question": item.question,
        "answer": " ".join(clauses), "clauses": clauses,
        "first_clause_ms": None if first is None else (first - started) * 1000, "first_token_ms": timings.get("first_token"),
        "total_ms": total_ms, "errors": errors,
    }


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    tune = {i.id for i in split_items(load_items(), "tune")}
    halves = {
        half: [r["right"] for r in results if (r.get("id") in tune) == (half == "tune")]
        for half in ("tune", "held-out")
    }
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        by_cat[r["category"]].append(r["right"])
    firsts = [r["first_clause_ms"] for r in results if r["first_clause_ms"] is not None]
    return {
        "score": sum(r["right"] for r in results) / len(results),
        "right": sum(r["right"] for r in results),
        "questions": len(results),
        "per_category": {c: sum(v) / len(v) for c, v in by_cat.items()},
        # The halves of split_items (what is tuned on, what is not), where the run holds them.
        "per_split": {h: sum(v) / len(v) for h, v in halves.items() if v},
        "first_clause_ms_median": statistics.median(firsts) if firsts else None,
        "first_clause_ms_p90": statistics.quantiles(firsts, n=10)[-1] if len(firsts) >= 2 else None,
        "starts_with_name": sum(r["starts_with_name"] for r in results),
        "over_two_sentences": sum(r["sentences"] > 2 for r in results),
        "errors": sum(bool(r["errors"]) for r in results),
    }


async def run(settings: LlmSettings, items: list[Item], name: str, show: bool) -> tuple[list[dict[str, Any]], str]:
    runs, model = await run_variants({"": settings}, items, name, show)
    return runs[""], model


async def run_variants(
    variants: dict[str, LlmSettings], items: list[Item], name: str, show: bool
) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Every question asked once per variant (an engine and a service with those settings),
    the variants' order alternating from question to question: a paired comparison, so a
    busy machine slows both alike."""
    loop = asyncio.get_running_loop()
    engines = {label: await loop.run_in_executor(None, build_engine, s) for label, s in variants.items()}
    out, events = _Capture(), _Capture()
    services = {label: LlmService(engines[label], s, out, events) for label, s in variants.items()}  # type: ignore[arg-type]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    labels = list(variants)
    try:
        for n, item in enumerate(items):
            for label in labels[n % len(labels):] + labels[: n % len(labels)]:
                r = await ask(services[label], out, events, item, n)
                r["right"] = is_right(r["answer"], item.expect)
                r["starts_with_name"] = starts_with_name(r["answer"], name)
                r["sentences"] = sentence_count(r["answer"])
                runs[label].append(r)
                if show:
                    mark = "ok " if r["right"] else "BAD"
                    print(f"{mark} {label}[{item.category}] {item.question} -> {r['answer']!r}"
                          f" ({r['first_clause_ms'] or 0:.0f} ms)", flush=True)
    finally:
        for service in services.values():
            service._pool.shutdown(wait=True)
        for engine in engines.values():
            engine.close()
    engine = next(iter(engines.values()))
    return runs, getattr(engine, "model_name", engine.name)


# The LLM stage as it was before issue 27's tuning, for --paired-baseline.
BEFORE_TUNING = {"few_shot": False, "penalize_prompt": True, "max_sentences": 0, "persona": PERSONA_BEFORE_27,
                 "calculator": False, "penalize_digits": True}


def paired(variants: dict[str, LlmSettings], items: list[Item], name: str, show: bool) -> dict[str, Any]:
    """Two settings question by question (``run_variants``): scores and first clauses."""
    runs, model = asyncio.run(run_variants(variants, items, name, show))
    report = {label: summarize(results) for label, results in runs.items()}
    first, second = list(runs)[:2] if len(runs) > 1 else (None, None)
    if first is not None:
        # Question by question: the same question under both settings, asked one after the other.
        ratios = [a["first_clause_ms"] / b["first_clause_ms"] for a, b in zip(runs[first], runs[second])
                  if a["first_clause_ms"] and b["first_clause_ms"]]
        if ratios:
            report[first]["first_clause_ratio_median"] = statistics.median(ratios)
            print(f"first clause, {first} / {second} per question: median ratio {statistics.median(ratios):.3f},"
                  f" {first} faster in {sum(r < 1 for r in ratios)} of {len(ratios)}")
    for label, summary in report.items():
        cats = ", ".join(f"{c} {100 * v:.1f}" for c, v in {**summary["per_split"], **summary["per_category"]}.items())
        print(f"{label:<13} score {100 * summary['score']:5.1f} %  first clause median "
              f"{summary['first_clause_ms_median']:.0f} ms, p90 {summary['first_clause_ms_p90']:.0f} ms, "
              f"{summary['over_two_sentences']} longer than two sentences, {summary['starts_with_name']} start with the name\n              ({cats})")
    return {"model": model, "summaries": report, "results": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm-url", default=None, help="OpenAI-compatible server (selects the openai engine)")
    parser.add_argument("--llm-model", default=None, help="model id, folder or GGUF file (default: the service's)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument("--pace", action="store_true", help="keep the service's token pacing")
    parser.add_argument("--name", default="Ava", help="the avatar's name (an answer must not start with it)")
    parser.add_argument("--show", action="store_true", help="print every answer")
    parser.add_argument("--label", default="", help="a label stored in the JSON (e.g. baseline)")
    parser.add_argument("--paired-few-shot", action="store_true",
                        help="ask every question with and without the few-shot examples, alternating")
    parser.add_argument("--paired-baseline", action="store_true",
                        help="ask every question with the settings before issue 27's tuning and with today's, alternating")
    parser.add_argument("--vs", default="",
                        help="also ask every question with these settings changed (FIELD=VALUE,...), alternating")
    parser.add_argument("--split", choices=SPLITS, default="all",
                        help="tune / held-out: every other question of each category (tune on one, report both)")
    parser.add_argument("--category", default="", help="only the questions of this category (e.g. arithmetic)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/answers.json"))
    args = parser.parse_args(argv)

    env = dict(os.environ)
    env.update(llm_overrides(args.llm_url, args.llm_model))
    settings = LlmSettings.from_env(env)
    if not args.pace:
        settings = dataclasses.replace(settings, pace_tokens_per_s=0.0)
    items = split_items(load_items(args.data), args.split)
    if args.category:
        items = [i for i in items if i.category == args.category]
        if not items:
            parser.error(f"no question of category {args.category!r}")
    items = items[: args.limit or None]
    if args.paired_few_shot or args.paired_baseline or args.vs:
        if args.vs:
            variants = {"default": settings, args.vs: dataclasses.replace(settings, **parse_overrides(args.vs, settings))}
        elif args.paired_few_shot:
            variants = {"few-shot": dataclasses.replace(settings, few_shot=True),
                        "no examples": dataclasses.replace(settings, few_shot=False)}
        else:
            variants = {"tuned": settings, "before tuning": dataclasses.replace(settings, **BEFORE_TUNING)}
        report = paired(variants, items, args.name, args.show)
        write_json(args.out, {"label": args.label, **report, "hardware": hardware()})
        print(f"wrote {args.out}")
        return 0
    results, model = asyncio.run(run(settings, items, args.name, args.show))
    summary = summarize(results)

    print(f"answer quality: {summary['right']}/{summary['questions']} right = {100 * summary['score']:.1f} %"
          f"  (engine {settings.engine}, model {model})")
    for category, score in {**summary["per_split"], **summary["per_category"]}.items():
        print(f"  {category:<12} {100 * score:5.1f} %")
    fc = summary["first_clause_ms_median"]
    print(f"first clause: median {fc if fc is None else round(fc)} ms, p90 "
          f"{summary['first_clause_ms_p90'] and round(summary['first_clause_ms_p90'])} ms")
    print(f"form: {summary['starts_with_name']} start with the name, "
          f"{summary['over_two_sentences']} longer than two sentences, {summary['errors']} errors")

    report = {
        "label": args.label, "engine": settings.engine, "model": model,
        "persona": settings.persona, "summary": summary, "results": results, "hardware": hardware(),
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
