"""Every model of the GPU profile on one device, in one command (about 5 minutes on one GPU):

    python -m bench.gpu [--device cuda|cpu] [--quick] [--out DIR] [--only PART,...]

Speed does not depend on the weights, so each model is built here with RANDOM weights in its
real architecture, directly on the device; nothing is downloaded (a GPU box may have no
internet). One JSON object goes to stdout (and to DIR/gpu.json), progress to stderr:

* ``wav2lip``: the project's generator (wav2lip/, 36.3 M params) in the engine's precision
  (float16 + channels_last on CUDA): model frames/s by batch size; and ``Wav2LipEngine.render``
  frames/s when one batch holds frames of 1, 4 or 16 sessions (crops, generator, paste-back);
* ``musetalk``: MuseTalk 1.5's UNet (musetalk.models.PUBLISHED_UNET_CONFIG, 849.9 M params) and
  sd-vae-ft-mse's decoder in float16, the same two measures through ``MuseTalkEngine.render``;
* ``llm``: Qwen2.5-7B's architecture (Qwen2Config, 7.6 B params) in float16: first-token latency
  and tokens/s for 1, 4 and 8 sessions decoded as one batch with a KV cache;
* ``vits``, ``xtts``: the real-time factor (synthesis seconds per second of audio; < 1 is faster
  than real time) of ``CoquiVitsEngine`` and ``CoquiXttsEngine``, each loading a model folder of
  the released architecture written here with random weights;
* each part: peak device memory (``torch.cuda.max_memory_allocated``, reset between parts; null
  on the CPU) and its wall time.

``--quick`` shrinks every model to a tiny config of the same class and runs one trial: it checks
that the whole path runs (well under 2 minutes on 2 CPU cores with ``--device cpu``); its figures
say nothing about the real models. ``--device cuda`` without a usable GPU exits 78 with the
diagnosis of services/cuda_check.py. A part that fails is reported as ``{"error": ...}``, the
others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.hardware import hardware
from services.tts.engine import TimedVoice, voice_pcm

logger = logging.getLogger("bench.gpu")

PARTS = ("wav2lip", "musetalk", "llm", "vits", "xtts")
CLAUSE_S = 1.0  # audio per session for the lip-sync render batches (25 frames)
TTS_TEXT = "Hello there, it is nice to meet you. Ask me anything, and I will answer in a few words."
WARMUP_TEXT = "Hello there."

# Qwen2.5-7B-Instruct's config.json (the architecture the GPU profile fetches).
QWEN25_7B: dict[str, Any] = {
    "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
    "max_position_embeddings": 32768, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False, "use_sliding_window": False,
}
# Same class, toy sizes: only shows that the path runs.
QWEN_TINY: dict[str, Any] = {
    **QWEN25_7B, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1024,
    "max_position_embeddings": 512,
}


@dataclass(frozen=True, slots=True)
class Plan:
    tiny: bool
    trials: int
    wav2lip_batches: tuple[int, ...]
    musetalk_batches: tuple[int, ...]
    qwen: dict[str, Any]
    prompt_tokens: int
    new_tokens: int
    # Random GPT weights seldom emit the stop token, so every XTTS clause runs to this bound;
    # 150 tokens of 1024 samples at 24 kHz = 6.4 s of audio, a long answer clause.
    xtts_max_audio_tokens: int
    render_batch: int = 16
    sessions: tuple[int, ...] = (1, 4, 16)
    llm_sessions: tuple[int, ...] = (1, 4, 8)

    @classmethod
    def full(cls) -> Plan:
        return cls(
            tiny=False, trials=5, wav2lip_batches=(1, 2, 4, 8, 16, 32, 64, 128),
            musetalk_batches=(1, 4, 8, 16, 32), qwen=QWEN25_7B, prompt_tokens=256,
            new_tokens=64, xtts_max_audio_tokens=150,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            tiny=True, trials=1, wav2lip_batches=(1, 4), musetalk_batches=(1, 4), qwen=QWEN_TINY,
            prompt_tokens=16, new_tokens=8, xtts_max_audio_tokens=24,
        )


@dataclass(slots=True)
class Bench:
    """The device and how to wait for it; what every part measures with."""

    device: torch.device
    plan: Plan
    results: dict[str, Any] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        # Kernels run asynchronously: a timer read without a sync measures only the launches.
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def warm_up(self, run: Callable[[], object]) -> None:
        """One untimed run (kernel selection, allocations); skipped by --quick, whose figures
        mean nothing anyway."""
        if not self.plan.tiny:
            run()
            self.sync()

    def best_s(self, run: Callable[[], object]) -> float:
        """Best of ``plan.trials`` timed runs after a warm-up; the best, because other processes
        may share the machine."""
        self.warm_up(run)
        best = math.inf
        for _ in range(self.plan.trials):
            started = time.perf_counter()
            run()
            self.sync()
            best = min(best, time.perf_counter() - started)
        return best

    @contextmanager
    def part(self, name: str) -> Iterator[dict[str, Any]]:
        """Record one part: its figures, peak memory since its start, wall time, or its error."""
        gc.collect()  # the previous part's models must be gone before the peak is reset
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        logger.info("%s: building random-weight models on %s", name, self.device)
        row: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            yield row
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
            logger.exception("%s failed", name)
            row.clear()
            row["error"] = f"{type(exc).__name__}: {exc}"
            self.failed.append(name)
        row["peak_memory_mib"] = self._peak_mib()
        row["wall_s"] = round(time.perf_counter() - started, 3)
        self.results[name] = row
        logger.info("%s: %s", name, json.dumps(row))


    def _peak_mib(self) -> float | None:
        if not self.cuda:
            return None
        try:
            self.sync()
            return round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        except RuntimeError:  # a part that broke the CUDA context: keep its error, not this one
            logger.exception("peak memory unreadable")
            return None


def speech_like_pcm(seconds: float, seed: int) -> np.ndarray:
    """16 kHz int16 noise with a syllable-rate envelope, loud enough that every video frame
    counts as speaking (so every frame goes through the model)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t + seed)
    return (0.25 * envelope * rng.standard_normal(t.size) * 32767).clip(-32768, 32767).astype(np.int16)


def _params_m(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)


# ------------------------------------------------------------------------------ lip-sync


def render_by_sessions(bench: Bench, engine: Any) -> dict[str, Any]:
    """``engine.render`` of one batch of ``plan.render_batch`` frames taken from 1, 4 or 16
    sessions' clauses (each session its own clause and loop position), as the lip-sync service
    batches them; plus the per-clause ``prepare`` cost."""
    plan = bench.plan
    clauses = [speech_like_pcm(CLAUSE_S, seed) for seed in range(max(plan.sessions))]
    bench.warm_up(lambda: engine.prepare(clauses[0], 0))  # mel filters, whisper kernels
    started = time.perf_counter()
    jobs = [engine.prepare(pcm, 7 * s) for s, pcm in enumerate(clauses)]
    bench.sync()
    prepare_s = time.perf_counter() - started
    fps: dict[str, float] = {}
    for sessions in plan.sessions:
        per_session = plan.render_batch // sessions
        items = [(jobs[s], k) for k in range(per_session) for s in range(sessions)]
        fps[str(sessions)] = round(len(items) / bench.best_s(lambda i=items: engine.render(i)), 1)
    talking = float(np.mean([job.speaking.mean() for job in jobs]))
    return {
        "render_fps_by_sessions": fps,
        "render_batch_frames": plan.render_batch,
        "prepare_ms_per_audio_s": round(1000 * prepare_s / (len(jobs) * CLAUSE_S), 1),
        "talking_frame_fraction": round(talking, 3),
    }


def bench_wav2lip(bench: Bench) -> dict[str, Any]:
    from services.lipsync.wav2lip_engine import Wav2LipEngine
    from services.avatar.library import default_avatar, open_store
    from wav2lip.avatar import from_store
    from wav2lip.inference import Wav2LipGenerator, select_precision
    from wav2lip.model import Wav2Lip

    precision = select_precision(bench.device.type)
    torch.manual_seed(0)
    model = Wav2Lip()  # the architecture is fixed: --quick runs the real one too
    store = open_store("")  # a temporary avatar store, gone with it
    entry = default_avatar(store, "")  # scikit-image's astronaut, its face by the store's Haar rule
    avatar = from_store(store, entry, entry.face_finder(None, "bgr"), "haar")
    rng = np.random.default_rng(0)
    fps: dict[str, float] = {}
    for batch in bench.plan.wav2lip_batches:
        generator = Wav2LipGenerator(model, precision, batch)
        crops = avatar.crops[rng.integers(0, len(avatar), batch)]
        mels = rng.uniform(-4, 4, (batch, 80, 16)).astype(np.float32)
        fps[str(batch)] = round(batch / bench.best_s(lambda g=generator, c=crops, m=mels: g.generate(c, m)), 1)
    engine = Wav2LipEngine(Wav2LipGenerator(model, precision, bench.plan.render_batch), avatar)
    return {
        "params_m": _params_m(model),
        "dtype": str(precision.dtype).removeprefix("torch."),
        "channels_last": precision.channels_last,
        "model_fps_by_batch": fps,
        **render_by_sessions(bench, engine),
    }


def _musetalk_models(bench: Bench) -> Any:
    if not bench.plan.tiny:
        from bench.bench_musetalk import published_models

        return published_models(bench.device, torch.float16 if bench.cuda else torch.float32)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from musetalk.models import PUBLISHED_UNET_CONFIG, prepare_models, select_precision

    # The sizes of tests/test_musetalk_models.py: whisper-tiny's 4 layers (so 10 x 5 = 50 audio
    # tokens per frame) but 32 wide, and the UNet's cross-attention follows that width.
    width = 32
    unet = UNet2DConditionModel.from_config({
        **PUBLISHED_UNET_CONFIG, "block_out_channels": [16, 32], "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "norm_num_groups": 8, "cross_attention_dim": width, "sample_size": 32,
    })
    vae = AutoencoderKL(  # four blocks, three 2x steps: 32x32 latents <-> 256x256 faces
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=4,
        norm_num_groups=8, sample_size=256,
    )
    encoder = WhisperEncoder(WhisperConfig(
        d_model=width, encoder_layers=4, encoder_attention_heads=2, encoder_ffn_dim=64,
        num_mel_bins=80, max_source_positions=1500,
    ))
    return prepare_models(unet, vae, encoder, WhisperFeatureExtractor(feature_size=80),
                          select_precision(bench.device.type))


def bench_musetalk(bench: Bench) -> dict[str, Any]:
    from musetalk.inference import MuseTalkRenderer
    from services.lipsync.musetalk_engine import MuseTalkEngine

    torch.manual_seed(0)
    models = _musetalk_models(bench)
    engine = MuseTalkEngine.from_modules(models, batch_size=bench.plan.render_batch)
    encoder = models.whisper_encoder
    dim = int(encoder.embed_positions.weight.shape[1])
    tokens = 10 * (len(encoder.layers) + 1)  # 10 whisper frames x (layers + embedding) per video frame
    renderer = MuseTalkRenderer(models, tokens, dim)
    rng = np.random.default_rng(0)
    fps: dict[str, float] = {}
    for batch in bench.plan.musetalk_batches:
        latents = np.repeat(engine.avatar.latents[:1], batch, axis=0)
        audio = rng.standard_normal((batch, tokens, dim)).astype(np.float32)
        fps[str(batch)] = round(batch / bench.best_s(lambda x=latents, a=audio: renderer.generate(x, a)), 1)
    return {
        "config": "tiny" if bench.plan.tiny else "published: musetalkV15 UNet, sd-vae-ft-mse, whisper-tiny",
        "unet_params_m": _params_m(models.unet),
        "vae_params_m": _params_m(models.vae),
        "dtype": str(models.precision.dtype).removeprefix("torch."),
        "model_fps_by_batch": fps,
        **render_by_sessions(bench, engine),
    }


# ------------------------------------------------------------------------------ language model


def _qwen(bench: Bench) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    # float16 as the GPU profile runs it; float32 on a CPU, where half matmuls are slow.
    dtype = torch.float16 if bench.cuda else torch.float32
    torch.manual_seed(0)
    with bench.device:  # initialised in place: a 7B model never passes through host memory
        model = Qwen2ForCausalLM._from_config(Qwen2Config(**bench.plan.qwen), dtype=dtype)
    return model.eval()


@torch.inference_mode()
def _decode(model: Any, prompts: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(first-token seconds, seconds for the other tokens): one batched prefill of all prompts,
    then greedy decode steps on the KV cache (passed as ``cache=``, transformers 5's name).
    Each step's tokens go to the host, as a streaming server's must."""
    started = time.perf_counter()
    out = model(input_ids=prompts, cache=None, use_cache=True, logits_to_keep=1)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    token.tolist()
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    cache = out.cache
    for _ in range(new_tokens - 1):
        out = model(input_ids=token, cache=cache, use_cache=True)
        cache = out.cache
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        token.tolist()
    return first_s, time.perf_counter() - started


def bench_llm(bench: Bench) -> dict[str, Any]:
    plan = bench.plan
    model = _qwen(bench)
    vocab = plan.qwen["vocab_size"]
    generator = torch.Generator().manual_seed(0)
    warm = torch.randint(0, vocab, (1, plan.prompt_tokens), generator=generator).to(bench.device)
    bench.warm_up(lambda: _decode(model, warm, 4))
    rows: dict[str, dict[str, float]] = {}
    for sessions in plan.llm_sessions:
        prompts = torch.randint(0, vocab, (sessions, plan.prompt_tokens), generator=generator).to(bench.device)
        best_first, best_rest = math.inf, math.inf
        for _ in range(max(1, plan.trials // 2)):  # a whole decode per trial: fewer trials
            first_s, rest_s = _decode(model, prompts, plan.new_tokens)
            best_first, best_rest = min(best_first, first_s), min(best_rest, rest_s)
        step_tokens = sessions * (plan.new_tokens - 1)
        rows[str(sessions)] = {
            "first_token_ms": round(1000 * best_first, 1),
            "tokens_per_s": round(step_tokens / best_rest, 1),
            "tokens_per_s_per_session": round((plan.new_tokens - 1) / best_rest, 1),
        }
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "config": {k: plan.qwen[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "num_key_value_heads", "intermediate_size", "vocab_size")},
        "params_m": _params_m(model),
        "weights_mib": round(weights / 2**20, 1),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "prompt_tokens": plan.prompt_tokens,
        "new_tokens": plan.new_tokens,
        "by_sessions": rows,
    }


# ------------------------------------------------------------------------------ speech


def _write_vits(folder: Path, tiny: bool) -> float:
    """A Coqui VITS model folder (config.json + model_file.pth) with random weights: the LJSpeech
    VITS sizes (VitsArgs' defaults), or the toy sizes of tests/test_coqui_tts.py. Returns the
    parameter count in millions."""
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    if tiny:
        args = VitsArgs(
            hidden_channels=16, hidden_channels_ffn_text_encoder=32, num_layers_text_encoder=1,
            num_layers_posterior_encoder=1, num_layers_flow=1, upsample_initial_channel_decoder=16,
            resblock_kernel_sizes_decoder=[3], resblock_dilation_sizes_decoder=[[1, 3, 5]],
            use_sdp=False, init_discriminator=False,
        )
    else:
        args = VitsArgs(init_discriminator=False)  # the discriminator only trains
    # Characters, not phonemes: the same network without depending on espeak-ng being installed.
    config = VitsConfig(
        model_args=args, use_phonemes=False, text_cleaner="english_cleaners",
        audio=BaseAudioConfig(sample_rate=22_050),
    )
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = Vits(config)
    torch.save({"model": model.state_dict()}, folder / "model_file.pth")
    config.save_json(str(folder / "config.json"))
    return _params_m(model)


def _write_xtts(folder: Path, tiny: bool, max_audio_tokens: int) -> float:
    """An XTTS-v2 model folder (config.json + model.pth + vocab.json) with random weights: the
    released sizes (XttsConfig's 30-layer, 1024-wide GPT, HiFi-GAN decoder and speaker encoder,
    with the released config's perceiver and audio vocabulary), or the toy GPT of
    tests/test_coqui_xtts_random.py. The BPE vocabulary is small (made here); the
    text embedding is a lookup, so its size hardly changes the speed. Returns the parameter
    count in millions."""
    from tokenizers import Tokenizer, models, trainers
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    folder.mkdir(parents=True)
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=["[STOP]", "[UNK]", "[SPACE]", "[START]", "[en]"],
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz.,?!'-"),
    )
    tok.train_from_iterator([TTS_TEXT.lower(), "once upon a time", "how are you today"], trainer)
    tok.save(str(folder / "vocab.json"))
    config = XttsConfig()
    args = config.model_args
    if tiny:
        args.gpt_layers, args.gpt_n_model_channels, args.gpt_n_heads = 2, 64, 4
        args.decoder_input_dim = 64  # the decoder reads the GPT's latents
        args.gpt_use_perceiver_resampler = False
    else:
        # XTTS-v2's released config (and Coqui's XTTS-v2 training recipe): the perceiver, and a
        # 1026-token audio vocabulary; XttsArgs' defaults (8194/8192/8193) are an older model's.
        args.gpt_use_perceiver_resampler = True
        args.gpt_num_audio_tokens, args.gpt_start_audio_token, args.gpt_stop_audio_token = 1026, 1024, 1025
    args.gpt_max_audio_tokens = max_audio_tokens
    torch.manual_seed(0)
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(folder / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return _params_m(model)


def _rtf(bench: Bench, synthesize: Callable[[str], Iterator[np.ndarray | TimedVoice]]) -> dict[str, Any]:
    """Real-time factor over TTS_TEXT (best of the trials), and when the first audio arrived."""
    bench.warm_up(lambda: list(synthesize(WARMUP_TEXT)))
    best: tuple[float, float, int] | None = None
    for _ in range(max(1, bench.plan.trials // 2)):  # a whole answer per trial: fewer trials
        started = time.perf_counter()
        first_s, samples = math.nan, 0
        for item in synthesize(TTS_TEXT):
            chunk = voice_pcm(item)  # VITS's chunks carry their phoneme timing too
            if samples == 0 and len(chunk):
                first_s = time.perf_counter() - started
            samples += len(chunk)
        total_s = time.perf_counter() - started
        if best is None or total_s < best[0]:
            best = (total_s, first_s, samples)
    assert best is not None
    total_s, first_s, samples = best
    audio_s = samples / 16_000  # the engines deliver 16 kHz
    if samples == 0:
        raise RuntimeError("the random-weight model produced no audio")
    return {
        "rtf": round(total_s / audio_s, 4),
        "audio_s": round(audio_s, 2),
        "synthesis_s": round(total_s, 3),
        "first_audio_ms": round(1000 * first_s, 1),
        "dtype": "float32",  # the Coqui engines run their models as loaded
    }


def bench_vits(bench: Bench) -> dict[str, Any]:
    from services.tts.coqui_engine import CoquiVitsEngine

    with tempfile.TemporaryDirectory(prefix="bench-vits-") as tmp:
        folder = Path(tmp) / "vits"
        params_m = _write_vits(folder, bench.plan.tiny)
        engine = CoquiVitsEngine(str(folder), device=bench.device.type)
    return {
        "config": "tiny" if bench.plan.tiny else "LJSpeech VITS sizes (characters, no phonemes)",
        "params_m": params_m,
        **_rtf(bench, engine.synthesize),
    }


def bench_xtts(bench: Bench) -> dict[str, Any]:
    import soundfile as sf

    from services.tts.coqui_engine import CoquiXttsEngine

    with tempfile.TemporaryDirectory(prefix="bench-xtts-") as tmp:
        folder = Path(tmp) / "xtts_v2"
        params_m = _write_xtts(folder, bench.plan.tiny, bench.plan.xtts_max_audio_tokens)
        reference = Path(tmp) / "voice.wav"  # the voice to clone: 6 s of speech-like noise
        sf.write(reference, speech_like_pcm(6.0, seed=1), 16_000)
        engine = CoquiXttsEngine(str(folder), speaker=str(reference), device=bench.device.type)
    return {
        "config": "tiny GPT" if bench.plan.tiny else "XTTS-v2 sizes (30-layer 1024-wide GPT, perceiver)",
        "params_m": params_m,
        "gpt_max_audio_tokens": bench.plan.xtts_max_audio_tokens,
        **_rtf(bench, engine.synthesize),
    }


PART_FUNCTIONS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "wav2lip": bench_wav2lip, "musetalk": bench_musetalk, "llm": bench_llm,
    "vits": bench_vits, "xtts": bench_xtts,
}


# ------------------------------------------------------------------------------ command line


def _parts(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny models, one trial: check that it all runs")
    parser.add_argument("--out", type=Path, default=None, help="also write DIR/gpu.json")
    parser.add_argument("--only", type=_parts, default=PARTS, help=f"comma-separated parts ({','.join(PARTS)})")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 with --device cpu, torch's own with cuda)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    # One thread on a CPU: on a small shared machine torch's threads spin-wait on each other
    # (5-30x slower here with 2 threads under load), as the services found (LlmSettings.threads).
    threads = args.threads or (1 if args.device == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)

    runtime: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                               "cpu_threads": torch.get_num_threads()}
    if args.device == "cuda":
        from services.cuda_check import EX_CONFIG, CudaUnavailable, verify_cuda

        try:
            facts = verify_cuda()
        except CudaUnavailable as exc:
            logger.error("bench.gpu --device cuda: %s", exc)
            return EX_CONFIG
        runtime.update(gpu=facts.device_name, driver=facts.driver_version, driver_cuda=facts.driver_cuda)
        # Convolutions of fixed shapes: let cuDNN pick the fastest kernel once per shape.
        torch.backends.cudnn.benchmark = True
    bench = Bench(torch.device(args.device), Plan.quick() if args.quick else Plan.full())
    started = time.perf_counter()
    for name in args.only:
        with bench.part(name) as row:
            row.update(PART_FUNCTIONS[name](bench))
    result = {
        "benchmark": "gpu",
        "device": args.device,
        "quick": args.quick,
        "note": "random weights in the real architectures" + (
            "; --quick: tiny configs, figures say nothing about the real models" if args.quick else ""),
        "hardware": hardware(),
        **runtime,
        **bench.results,
        "failed": bench.failed,
        "wall_s": round(time.perf_counter() - started, 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu.json").write_text(text + "\n", encoding="utf-8")
        logger.info("wrote %s", args.out / "gpu.json")
    return 1 if bench.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
