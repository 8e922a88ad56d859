"""Benchmark the weight-free animation engine: render cost per frame on one core.

    python bench/bench_animation.py [--avatar PATH] [--frames 500] [--out bench-results/animation.json]

Renders a loudness-driven mouth, then a viseme-shaped one (a repeating "m a b u f i s"
phoneme track through ``viseme_track``). Besides wall time it reports the render thread's CPU
time, which a busy shared machine does not inflate (frames/s on one core = 1000 / CPU ms).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from services.avatar import load_avatar  # noqa: E402
from services.avatar.animation import FaceAnimator, MouthEnvelope  # noqa: E402
from services.avatar.visemes import viseme_track  # noqa: E402
from services.phoneme_timing import PhonemeSpan  # noqa: E402
from services.media import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS  # noqa: E402
from bench.result_file import write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", default="", help='photo/video; "" = the astronaut')
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--out", default="bench-results/animation.json")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # the target is one core; OpenCV would otherwise use both

    image = load_avatar(args.avatar)[0]
    t0 = time.perf_counter()
    animator = FaceAnimator(image)
    prep_ms = (time.perf_counter() - t0) * 1000

    # Speech-like loudness: a 220 Hz tone with a 4 Hz syllable envelope and pauses.
    n = args.frames
    t = np.arange(n * SAMPLES_PER_VIDEO_FRAME) / SAMPLE_RATE
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, 1) * (np.sin(2 * np.pi * 0.3 * t) > -0.5)
    pcm = (8000 * syllables * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    t1 = time.perf_counter()
    openness = MouthEnvelope().push(pcm)
    envelope_ms = (time.perf_counter() - t1) * 1000

    spans, at = [], 0
    while at < len(pcm):
        for phoneme, ms in (("m", 60), ("a", 120), ("b", 40), ("u", 110), ("f", 70), ("i", 100), ("s", 90)):
            spans.append(PhonemeSpan(phoneme, at, at + ms * 16))
            at += ms * 16
    shapes = viseme_track(spans, pcm, n)

    animator.render(0.5, 0.0)
    times_ms, cpu_ms, viseme_cpu_ms = [], [], []
    for i, o in enumerate(openness):
        start, cpu = time.perf_counter(), time.thread_time()
        animator.render(o, i / VIDEO_FPS)
        cpu_ms.append((time.thread_time() - cpu) * 1000)
        times_ms.append((time.perf_counter() - start) * 1000)
    for i, shape in enumerate(shapes):
        cpu = time.thread_time()
        animator.render(shape, i / VIDEO_FPS)
        viseme_cpu_ms.append((time.thread_time() - cpu) * 1000)
    times_ms.sort()
    result = {
        "avatar": args.avatar or "astronaut",
        "frame_size": list(image.shape[:2]),
        "frames": n,
        "prep_ms": round(prep_ms, 1),
        "envelope_ms_total": round(envelope_ms, 2),
        "render_ms_median": round(statistics.median(times_ms), 3),
        "render_ms_p95": round(times_ms[int(0.95 * (len(times_ms) - 1))], 3),
        "render_ms_mean": round(statistics.fmean(times_ms), 3),
        "frames_per_s": round(1000 / statistics.fmean(times_ms), 1),
        "cpu_ms_mean_loudness": round(statistics.fmean(cpu_ms), 3),
        "cpu_ms_mean_visemes": round(statistics.fmean(viseme_cpu_ms), 3),
        "frames_per_cpu_s_loudness": round(1000 / statistics.fmean(cpu_ms), 1),
        "frames_per_cpu_s_visemes": round(1000 / statistics.fmean(viseme_cpu_ms), 1),
        "opencv_threads": 1,
        "machine": platform.processor() or platform.machine(),
    }
    print(
        f"{result['avatar']} {image.shape[1]}x{image.shape[0]}: prep {prep_ms:.0f} ms, render "
        f"median {result['render_ms_median']:.2f} ms, p95 {result['render_ms_p95']:.2f} ms, "
        f"{result['frames_per_s']:.0f} frames/s on one core (wall); CPU time: "
        f"{result['frames_per_cpu_s_loudness']:.0f} frames/s loudness, "
        f"{result['frames_per_cpu_s_visemes']:.0f} frames/s visemes"
    )
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
