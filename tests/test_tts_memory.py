"""Piper's resident memory stays flat over many clauses of varying length (the soak's TTS leak).

onnxruntime's default session options grew the TTS process in steps as longer inputs came
(the soak: 307 -> 482 MB over 25 minutes); see ARENA_REGION_BYTES in
services/tts/piper_engine.py for the causes and the figures.
"""

from __future__ import annotations

import concurrent.futures
import random

import pytest

from services.tts.piper_engine import PiperEngine
from services.tts.settings import TtsSettings
from tests.memory import rss_mb

pytestmark = pytest.mark.slow

WORDS = (
    "the quick brown fox jumps over a lazy dog while seven bright stars shine above our quiet "
    "little town and people talk about weather music history science coffee morning evening "
    "river mountain garden window yesterday tomorrow really simply"
).split()
# Up to 27 of these words is about 160 characters, the longest clause services/llm/clauses.py cuts.
MAX_WORDS = 27
WARM_UP_CLAUSES = 20
MEASURED_CLAUSES = 100
# Measured on 2 cores (seed 7, twice each, ~30 s a run): onnxruntime's default options grew
# +86 MB over these 100 clauses; the fixed engine -21 to -23 MB (it is at its steady ~360 MB
# by then; the warm-up point had not yet settled). The bound sits far from both.
MAX_GROWTH_MB = 30


def varying_clauses(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, MAX_WORDS))).capitalize() + "."
        for _ in range(count)
    ]


def rss_growth_mb(engine) -> tuple[float, float]:
    """(RSS after the warm-up clauses, growth over the measured ones), synthesizing on one worker
    thread as TtsService does (glibc gives that thread its own malloc arena)."""

    def speak(text: str) -> None:
        for _ in engine.synthesize(text):
            pass

    clauses = varying_clauses(WARM_UP_CLAUSES + MEASURED_CLAUSES)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tts") as pool:
        for text in clauses[:WARM_UP_CLAUSES]:
            pool.submit(speak, text).result()
        warm_mb = rss_mb()
        for text in clauses[WARM_UP_CLAUSES:]:
            pool.submit(speak, text).result()
        # A short last clause, so memory a long one borrowed for its run is counted as given back.
        pool.submit(speak, "Yes.").result()
    return warm_mb, rss_mb() - warm_mb


def test_piper_rss_stays_flat_over_varying_clauses():
    engine = PiperEngine.from_settings(TtsSettings())
    warm_mb, growth_mb = rss_growth_mb(engine)
    assert growth_mb < MAX_GROWTH_MB, (
        f"Piper's RSS grew {growth_mb:.0f} MB over {MEASURED_CLAUSES} clauses after a "
        f"{warm_mb:.0f} MB warm-up"
    )
