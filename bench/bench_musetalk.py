"""MuseTalk 1.5 throughput: frames/s by batch size on a CUDA GPU, published model shapes.

    .venv/bin/python -m bench.bench_musetalk [--out bench-results/musetalk.json] [--trials 5]

Speed does not depend on the weights, so the models are built with random weights in the
published shapes (UNet from musetalkV15/musetalk.json, 849.9 M params; sd-vae-ft-mse;
whisper-tiny), in float16 as the engine runs them. Per batch size it reports:
* ``model_fps``: the UNet + VAE-decode step alone (what batching speeds up);
* ``engine_fps``: ``MuseTalkEngine.frames`` over a 2 s clause of speech-like audio, i.e. whisper,
  UNet, VAE decode, host copies and the paste-back into the 512x512 astronaut frame.
It also times the whisper encoder per 2 s clause with the clause window and the 30 s window.

Without a CUDA GPU it prints "no CUDA GPU: MuseTalk GPU benchmark skipped", writes that into the
JSON, and (with ``--cpu-smoke``) adds one number for a *tiny random config* on the CPU, which only
shows that the path runs, not how fast MuseTalk is.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.hardware import hardware
from bench.result_file import write_json

BATCH_SIZES = (1, 4, 8, 16)
CLAUSE_S = 2.0


def speech_like_pcm(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16_000)) / 16_000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    return (0.3 * envelope * rng.standard_normal(t.size) * 32767).astype(np.int16)


def best_seconds(run: Callable[[], object], trials: int, sync: Callable[[], None]) -> float:
    run()  # warm-up: cuDNN/cuBLAS pick kernels for the shape on first use
    sync()
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def published_models(device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    from musetalk.models import PUBLISHED_UNET_CONFIG, Precision, prepare_models

    with device:
        unet = UNet2DConditionModel.from_config(PUBLISHED_UNET_CONFIG)
        vae = AutoencoderKL(  # sd-vae-ft-mse's shape
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=256,
        )
        encoder = WhisperModel(WhisperConfig()).get_encoder()  # defaults = whisper-tiny
    return prepare_models(unet, vae, encoder, WhisperFeatureExtractor(), Precision(device, dtype))


def tiny_cpu_models():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    from musetalk.models import PUBLISHED_UNET_CONFIG, Precision, prepare_models

    config = dict(PUBLISHED_UNET_CONFIG)
    config.update(
        block_out_channels=[32, 64], layers_per_block=1, norm_num_groups=16,
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    )
    unet = UNet2DConditionModel.from_config(config)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32), layers_per_block=1, latent_channels=4,
        norm_num_groups=16, sample_size=256,
    )
    encoder = WhisperModel(WhisperConfig()).get_encoder()
    precision = Precision(torch.device("cpu"), torch.float32)
    return prepare_models(unet, vae, encoder, WhisperFeatureExtractor(), precision)


def measure(models, trials: int, batch_sizes: tuple[int, ...], sync: Callable[[], None]) -> dict:
    from musetalk.audio_features import WhisperFeaturizer
    from musetalk.inference import MuseTalkRenderer
    from services.lipsync.musetalk_engine import MuseTalkEngine

    engine = MuseTalkEngine.from_modules(models, batch_size=1)
    avatar = engine.avatar  # one prepared avatar reused for every batch size
    dim = int(models.whisper_encoder.embed_positions.weight.shape[1])
    tokens = 10 * (len(models.whisper_encoder.layers) + 1)
    renderer = MuseTalkRenderer(models, tokens, dim)
    pcm = speech_like_pcm(CLAUSE_S)
    n_frames = int(CLAUSE_S * 25)
    rng = np.random.default_rng(0)
    rows: dict[str, dict[str, float]] = {}
    for batch in batch_sizes:
        latents = np.repeat(avatar.latents[:1], batch, axis=0)
        audio = rng.standard_normal((batch, tokens, dim)).astype(np.float32)
        model_s = best_seconds(lambda: renderer.generate(latents, audio), trials, sync)
        eng = MuseTalkEngine(models, avatar, batch_size=batch)
        engine_s = best_seconds(lambda: list(eng.frames(pcm, 0)), trials, sync)
        rows[str(batch)] = {"model_fps": batch / model_s, "engine_fps": n_frames / engine_s}
        print(f"  batch {batch:2d}: model {batch / model_s:7.1f} frames/s, "
              f"engine {n_frames / engine_s:7.1f} frames/s")
    whisper_ms = {}
    audio_f32 = pcm.astype(np.float32) / 32768.0
    for window in ("clause", "full"):
        featurizer = WhisperFeaturizer(models.whisper_encoder, models.feature_extractor, window)
        whisper_ms[window] = 1000 * best_seconds(lambda: featurizer.encode(audio_f32), trials, sync)
        print(f"  whisper features for a {CLAUSE_S:.0f} s clause, {window} window: "
              f"{whisper_ms[window]:.1f} ms")
    return {"by_batch": rows, "whisper_ms_per_2s_clause": whisper_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results/musetalk.json")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny config on CPU (no GPU only)")
    args = parser.parse_args(argv)
    result: dict = {"hardware": hardware(), "clause_s": CLAUSE_S}
    if torch.cuda.is_available():
        device = torch.device("cuda")
        print(f"MuseTalk GPU benchmark on {torch.cuda.get_device_name(0)} (fp16, published shapes)")
        models = published_models(device, torch.float16)
        result["gpu"] = {
            "dtype": "float16",
            "config": "published (musetalkV15 UNet 849.9 M params, sd-vae-ft-mse, whisper-tiny)",
            **measure(models, args.trials, BATCH_SIZES, torch.cuda.synchronize),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        }
    else:
        print("no CUDA GPU: MuseTalk GPU benchmark skipped")
        result["gpu"] = {"skipped": "no CUDA GPU: MuseTalk GPU benchmark skipped"}
        if args.cpu_smoke:
            print("CPU smoke run, TINY random config (not MuseTalk's speed):")
            result["cpu_tiny_smoke"] = {
                "note": "tiny random config on CPU; shows the path runs, not MuseTalk's speed",
                **measure(tiny_cpu_models(), 1, (4,), lambda: None),
            }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
