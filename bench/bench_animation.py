"""Benchmark the weight-free animation engine: render cost per frame on one core.

    python bench/bench_animation.py [--avatar PATH] [--frames 500] [--out bench-results/animation.json]
"""

from __future__ import annotations

import argparse
import json
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
from services.media import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS  # noqa: E402


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

    animator.render(0.5, 0.0)
    times_ms = []
    for i, o in enumerate(openness):
        start = time.perf_counter()
        animator.render(o, i / VIDEO_FPS)
        times_ms.append((time.perf_counter() - start) * 1000)
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
        "opencv_threads": 1,
        "machine": platform.processor() or platform.machine(),
    }
    print(
        f"{result['avatar']} {image.shape[1]}x{image.shape[0]}: prep {prep_ms:.0f} ms, render "
        f"median {result['render_ms_median']:.2f} ms, p95 {result['render_ms_p95']:.2f} ms, "
        f"{result['frames_per_s']:.0f} frames/s on one core"
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
