"""bench/bench_concurrency.py's summary over rounds: medians and worst over every client of a
level, the worst as a multiple of the single-client median, and a client that never heard its
answer shown as such (never hidden by a median)."""

from __future__ import annotations

from bench.bench_concurrency import ClientResult, Level, longest_gap_ms, summarize, summary_table


def client(i: int, first_audio_ms: float | None, fps_min: float = 25.0, below: int = 0) -> ClientResult:
    return ClientResult(i, "hello", first_audio_ms, None, {}, first_audio_ms is not None, [fps_min], fps_min, below)


def test_summary_over_rounds_gives_median_worst_and_the_ratio_to_one_client():
    levels = [
        Level(1, False, 2.0, 45.0, [client(0, 500.0)], None),
        Level(3, False, 2.0, 45.0, [client(0, 700.0), client(1, 800.0), client(2, 900.0, 22.0, 1)], None),
        Level(1, False, 2.0, 45.0, [client(0, 400.0)], None),
        Level(3, False, 2.0, 45.0, [client(0, 650.0), client(1, 750.0), client(2, 1350.0)], None),
    ]
    summary = summarize(levels)
    assert summary["1"]["first_audio_median_ms"] == 450.0
    three = summary["3"]
    assert three["rounds"] == 2 and three["clients_measured"] == 6
    assert three["first_audio_median_ms"] == 775.0
    assert three["first_audio_worst_ms"] == 1350.0
    assert three["worst_over_single_median"] == 3.0  # 1350 / 450
    assert three["fps_min"] == 22.0 and three["secs_below_20fps"] == 1
    table = summary_table(summary)
    assert "0.78 / 1.35" in table and "3.00x" in table


def test_a_client_without_an_answer_makes_the_worst_never():
    levels = [
        Level(1, False, 2.0, 45.0, [client(0, 500.0)], None),
        Level(2, False, 2.0, 45.0, [client(0, 600.0), client(1, None)], None),
    ]
    two = summarize(levels)["2"]
    assert two["first_audio_worst_ms"] is None and two["worst_over_single_median"] is None
    assert two["unanswered"] == 1
    assert "never" in summary_table(summarize(levels))


def test_longest_gap_is_the_longest_silence_inside_the_answer():
    # (time, peak): voice at 1.0-1.1, a 0.4 s hole, voice at 1.5-1.6; silence before and after.
    levels = [(0.5, 0.0), (1.0, 900.0), (1.1, 800.0), (1.3, 10.0), (1.5, 700.0), (1.6, 900.0), (2.5, 0.0)]
    assert longest_gap_ms(levels, after=0.0) == 400.0
    assert longest_gap_ms(levels, after=1.55) is None  # one voiced packet: no gap to measure


def test_cores_after_counts_the_cpu_a_busy_process_spends_in_the_window():
    import asyncio
    import os
    import threading
    import time

    from bench.bench_concurrency import cores_after

    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin, daemon=True)
    worker.start()
    try:
        cores = asyncio.run(cores_after([os.getpid()], time.monotonic() + 0.05, 0.5))
    finally:
        stop.set()
        worker.join(5)
    # One spinning thread: most of a core, whatever else the machine runs (never above 1.5).
    (name, used), = cores.items()
    assert 0.05 < used < 1.5, cores
