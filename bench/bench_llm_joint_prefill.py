"""Three sessions asking new questions at the same moment: when does the last one get its first token?

The batched decoder admits requests that wait together in one loop. With joint admission
(``services/llm/batched_decoder.py``) their uncached prompt tails share one prefill forward;
without it (``AVATAR_LLM_JOINT_PREFILL=0`` in the services, ``joint=False`` here) each is
prefilled in a forward of its own, one after another. On the CPU a forward costs about what
reading the weights costs, so three prefills in a row are about three times one.

Each round asks three questions never asked before (so no cached prompt hides the prefill),
all submitted while the decode thread is held, so they are admitted in the same loop; rounds
alternate which mode goes first. Embedded SmolLM2, the service's own settings, offline.

Usage: ``python -m bench.bench_llm_joint_prefill --rounds 6 --out bench-results/llm-joint-prefill.json``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

from bench.hardware import hardware
from bench.result_file import write_json

SUBJECTS = ("the moon", "rain", "cats", "the ocean", "trains", "music", "bread", "winter", "bees", "clocks",
            "rivers", "chess", "volcanoes", "owls", "paper", "glass", "maps", "kites", "salt", "stars")
SESSIONS = 3


def first_tokens(engine, questions: list[str]) -> list[float]:  # noqa: ANN001 (TransformersEngine)
    """Ms from submitting all ``questions`` at once to each one's first token."""
    chats = [[*engine._fixed, {"role": "user", "content": q}] for q in questions]
    prompts = [engine._template_ids(chat, add_generation_prompt=True) for chat in chats]
    firsts: list[float] = [0.0] * len(questions)
    with engine.decoder._cond:  # held: all of them wait together when the decode thread looks
        t0 = time.perf_counter()
        streams = [engine.decoder.submit(ids, engine._prefix_len(chat, ids), 4, lambda: False)
                   for chat, ids in zip(chats, prompts, strict=True)]

    def read(i: int) -> None:
        for _ in streams[i]:
            if not firsts[i]:
                firsts[i] = (time.perf_counter() - t0) * 1000

    readers = [threading.Thread(target=read, args=(i,), name=f"reader-{i}") for i in range(len(streams))]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(120)
    return firsts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_llm_joint_prefill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="rounds per mode (default 6)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/llm-joint-prefill.json"))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not 1 <= args.rounds <= len(SUBJECTS):
        parser.error(f"--rounds must be between 1 and {len(SUBJECTS)}")

    from services.llm.settings import LlmSettings
    from services.llm.transformers_engine import TransformersEngine

    engine = TransformersEngine.from_settings(LlmSettings.from_env())
    runs: dict[str, list[list[float]]] = {"apart": [], "joint": []}
    asked = 0
    try:
        for rnd in range(args.rounds):
            for joint in (False, True) if rnd % 2 == 0 else (True, False):
                engine.decoder._joint = joint
                questions = [f"Tell me one thing about {SUBJECTS[(asked + i) % len(SUBJECTS)]} and "
                             f"{SUBJECTS[(asked + i + 7) % len(SUBJECTS)]}, number {asked + i}." for i in range(SESSIONS)]
                asked += SESSIONS
                firsts = first_tokens(engine, questions)
                runs["joint" if joint else "apart"].append([round(f, 1) for f in firsts])
                print(f"round {rnd} {'joint' if joint else 'apart'}: first tokens {[round(f) for f in firsts]} ms",
                      flush=True)
    finally:
        engine.close()
    summary = {
        mode: {"last_first_token_ms_median": round(statistics.median(max(r) for r in rs), 1),
               "first_token_ms_median": round(statistics.median(f for r in rs for f in r), 1)}
        for mode, rs in runs.items()
    }
    for mode, s in summary.items():
        print(f"{mode}: last of {SESSIONS} first tokens, median {s['last_first_token_ms_median']:.0f} ms; "
              f"every first token, median {s['first_token_ms_median']:.0f} ms")
    out = write_json(args.out, {"benchmark": "llm_joint_prefill", "command": "python -m bench.bench_llm_joint_prefill "
                                + " ".join(sys.argv[1:] if argv is None else argv), "hardware": hardware(),
                                "sessions": SESSIONS, "rounds": runs, "summary": summary})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
