"""Wav2Lip generator throughput on this machine (random weights; speed does not depend on them).

    .venv/bin/python -m bench.bench_wav2lip [--out bench-results/wav2lip.json] [--trials 5]

Prints frames/s of the path the engine picks (bf16 + channels_last on a CPU with native bf16)
for batch sizes 1..32, and of a plain float32 loop shaped like upstream's inference.py (NCHW,
fp32, numpy -> tensor -> numpy per batch of 16). Reports the best of ``--trials`` timed runs per
setting, since other processes share the cores; the load average is recorded with the result.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from wav2lip.inference import Wav2LipGenerator, cpu_has_native_bf16, select_precision
from wav2lip.model import Wav2Lip
from bench.result_file import write_json

BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def best_fps(run, n_frames: int, trials: int) -> float:
    run()  # warm-up: oneDNN picks and caches kernels for the shape on first use
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return n_frames / best


def upstream_style_loop(model: Wav2Lip, crops: np.ndarray, mels: np.ndarray, batch: int) -> None:
    # As upstream inference.py's datagen + loop: numpy masked/full concat, /255, NCHW fp32.
    for start in range(0, len(crops), batch):
        img = crops[start : start + batch]
        masked = img.copy()
        masked[:, 48:] = 0
        img_batch = np.concatenate((masked, img), axis=3) / 255.0
        mel_batch = mels[start : start + batch].reshape(-1, 80, 16, 1)
        img_t = torch.FloatTensor(np.transpose(img_batch, (0, 3, 1, 2)))
        mel_t = torch.FloatTensor(np.transpose(mel_batch, (0, 3, 1, 2)))
        with torch.no_grad():
            pred = model(mel_t, img_t)
        (pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="bench-results/wav2lip.json")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--frames", type=int, default=32, help="frames per timed run")
    args = parser.parse_args()

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (args.frames, 96, 96, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, (args.frames, 80, 16)).astype(np.float32)
    precision = select_precision("cpu")
    state = Wav2Lip().state_dict()

    chosen: dict[str, float] = {}
    print(
        f"CPU: {cpu_model_name()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"native bf16: {cpu_has_native_bf16()}, load avg {os.getloadavg()[0]:.2f}"
    )
    print(f"chosen path: {precision.dtype} channels_last={precision.channels_last}")
    for batch in BATCH_SIZES:
        model = Wav2Lip()
        model.load_state_dict(state)
        gen = Wav2LipGenerator(model, precision, batch)
        fps = best_fps(lambda g=gen: g.generate(crops, mels), args.frames, args.trials)
        chosen[str(batch)] = round(fps, 1)
        print(f"  batch {batch:2d}: {fps:6.1f} frames/s")

    plain = Wav2Lip().eval()
    plain.load_state_dict(state)
    upstream_fps = best_fps(
        lambda: upstream_style_loop(plain, crops, mels, 16), args.frames, args.trials
    )
    print(f"upstream-style fp32 loop (batch 16): {upstream_fps:6.1f} frames/s")

    result = {
        "benchmark": "wav2lip_generator_96",
        "cpu_model": cpu_model_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "chosen_dtype": str(precision.dtype).removeprefix("torch."),
        "channels_last": precision.channels_last,
        "fps_by_batch": chosen,
        "upstream_fp32_batch16_fps": round(upstream_fps, 1),
        "frames_per_run": args.frames,
        "trials": args.trials,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "note": "best of trials; the machine may be shared with other jobs",
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
