"""Wav2Lip inside the lip-sync service's engine: frames/s for the whole path the service runs
(mel windows, face crops, batched generator, feathered paste-back), on ~17 s of speech, with a
random-weight checkpoint of the real architecture (speed does not depend on the weights).
Usage: ``python -m bench.bench_wav2lip_engine --threads 2 --out bench-results/wav2lip_engine.json``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.hardware import hardware
from bench.result_file import write_json

TEXT = "Once upon a time a brave knight rode out to find the dragon of the northern hills, and he rode for many days."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("bench-results/wav2lip_engine.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from services.lipsync.settings import LipsyncSettings
    from services.lipsync.wav2lip_engine import Wav2LipEngine
    from tests.speech import piper_speech
    from tests.wav2lip_helpers import save_random_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_random_checkpoint(Path(tmp) / "wav2lip.pth", seed=3)
        settings = LipsyncSettings.from_env(
            {**os.environ, "AVATAR_LIPSYNC_ENGINE": "wav2lip", "AVATAR_WAV2LIP_CHECKPOINT": str(checkpoint)}
        )
        engine = Wav2LipEngine.from_settings(settings)
    pcm = np.concatenate([piper_speech(TEXT)] * 3)
    list(engine.frames(pcm[:16000], 0))  # warm-up: lazy kernels and allocations
    started = time.perf_counter()
    frames = sum(1 for _ in engine.frames(pcm, 0))
    seconds = time.perf_counter() - started
    result = {
        "benchmark": "wav2lip_engine", "hardware": hardware(), "torch_threads": args.threads,
        "speech_s": round(len(pcm) / 16000, 1), "frames": frames, "seconds": round(seconds, 2),
        "frames_per_s": round(frames / seconds, 1), "batch": settings.batch_size,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    write_json(args.out, result)
    print(f"Wav2Lip engine, {args.threads} torch thread(s), batch {settings.batch_size}: {frames} frames of "
          f"{result['speech_s']} s speech in {result['seconds']} s = {result['frames_per_s']} frames/s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
