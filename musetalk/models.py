"""Find and load MuseTalk 1.5's three checkpoints, and the audio positional encoding.

Folder layout (what ``python main.py fetch`` writes under ``<models>/musetalk``)::

    musetalkV15/musetalk.json      diffusers UNet2DConditionModel config
    musetalkV15/unet.pth           raw UNet state dict (loaded with weights_only=True)
    sd-vae/config.json             AutoencoderKL (sd-vae-ft-mse)
    sd-vae/diffusion_pytorch_model.safetensors | .bin
    whisper/config.json            whisper-tiny (only its encoder is used)
    whisper/model.safetensors | pytorch_model.bin
    whisper/preprocessor_config.json

Precision: float16 on CUDA (what MuseTalk's realtime script runs), float32 on CPU (the CPU path
exists for tests and smoke runs; an 850 M-parameter UNet is not real-time on a CPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass

import torch

from avatar_base.device import pick_device
from musetalk.errors import MuseTalkModelMissing

logger = logging.getLogger(__name__)

FETCH_COMMAND = (
    "python main.py fetch --profile gpu --only musetalk-v15 --only musetalk-sd-vae "
    "--only musetalk-whisper-tiny"
)
VAE_SCALING_FACTOR = 0.18215  # sd-vae-ft-mse's latent scale, as MuseTalk uses it
UNET_SUBDIR = "musetalkV15"
VAE_SUBDIR = "sd-vae"
WHISPER_SUBDIR = "whisper"

# musetalkV15/musetalk.json as published (diffusers keys); the benchmark builds this shape with
# random weights when no checkpoint is present. 849.9 M parameters.
PUBLISHED_UNET_CONFIG: dict[str, object] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
}


@dataclass(frozen=True, slots=True)
class Precision:
    device: torch.device
    dtype: torch.dtype


def select_precision(device: str = "auto") -> Precision:
    """``device`` is auto | cpu | cuda (``avatar_base.device.pick_device`` reads it): float16 on
    CUDA, float32 on CPU."""
    chosen = pick_device(device)
    return Precision(chosen, torch.float16 if chosen.type == "cuda" else torch.float32)


@dataclass(frozen=True, slots=True)
class MuseTalkFiles:
    """Resolved paths of everything the engine reads."""

    unet_config: str
    unet_weights: str
    vae_dir: str
    vae_weights: str
    whisper_dir: str


def _missing(path: str, what: str) -> MuseTalkModelMissing:
    return MuseTalkModelMissing(
        f"MuseTalk {what} not found: {path}. MuseTalk 1.5 weights are MIT-licensed; fetch them "
        f"with `{FETCH_COMMAND}` (or set AVATAR_MUSETALK_DIR to a folder holding musetalkV15/, "
        "sd-vae/ and whisper/). Without them, use AVATAR_LIPSYNC_ENGINE=animation."
    )


def _first_existing(folder: str, names: tuple[str, ...], what: str) -> str:
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise _missing(os.path.join(folder, " | ".join(names)), what)


def find_files(root: str) -> MuseTalkFiles:
    """Check the folder layout up front so a missing file is named before any model loads."""
    if not root or not os.path.isdir(root):
        raise _missing(root or "(AVATAR_MUSETALK_DIR not set)", "model folder")
    unet_dir = os.path.join(root, UNET_SUBDIR)
    vae_dir = os.path.join(root, VAE_SUBDIR)
    whisper_dir = os.path.join(root, WHISPER_SUBDIR)
    unet_config = _first_existing(unet_dir, ("musetalk.json",), "UNet config")
    unet_weights = _first_existing(unet_dir, ("unet.pth",), "UNet weights")
    _first_existing(vae_dir, ("config.json",), "VAE config")
    vae_weights = _first_existing(
        vae_dir,
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
        "VAE weights",
    )
    _first_existing(whisper_dir, ("config.json",), "whisper config")
    _first_existing(whisper_dir, ("model.safetensors", "pytorch_model.bin"), "whisper weights")
    _first_existing(whisper_dir, ("preprocessor_config.json",), "whisper preprocessor config")
    return MuseTalkFiles(unet_config, unet_weights, vae_dir, vae_weights, whisper_dir)


def load_unet(config_path: str, weights_path: str):
    """UNet2DConditionModel from musetalk.json + the raw state dict in unet.pth."""
    from diffusers import UNet2DConditionModel

    with open(config_path, encoding="utf-8") as fh:
        config = json.load(fh)
    unet = UNet2DConditionModel.from_config(config)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise MuseTalkModelMissing(
            f"MuseTalk UNet weights {weights_path} are unreadable ({exc}); fetch them again with "
            f"`{FETCH_COMMAND}`"
        ) from exc
    if not isinstance(state, dict):
        raise MuseTalkModelMissing(
            f"{weights_path} holds a {type(state).__name__}, not a UNet state dict"
        )
    try:
        unet.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MuseTalkModelMissing(
            f"MuseTalk UNet weights {weights_path} do not match {config_path}: {exc}"
        ) from exc
    return unet.eval()


def load_vae(vae_dir: str):
    """AutoencoderKL (diffusers converts sd-vae-ft-mse's old attention key names on load)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(vae_dir, local_files_only=True).eval()


def load_whisper(whisper_dir: str):
    """(whisper encoder, feature extractor); the decoder is dropped right after loading."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    model = WhisperModel.from_pretrained(whisper_dir, local_files_only=True)
    extractor = WhisperFeatureExtractor.from_pretrained(whisper_dir, local_files_only=True)
    return model.get_encoder().eval(), extractor


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """(length, dim) transformer sine/cosine table, added to each frame's audio tokens.

    Even channels hold sin(pos / 10000^(2i/dim)), odd channels the cosine, as in "Attention is
    all you need"; MuseTalk adds it over the 50 tokens of a frame (d=384 for whisper-tiny).
    """
    if dim % 2:
        raise ValueError(f"positional encoding needs an even width, got {dim}")
    position = torch.arange(length, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


@dataclass(frozen=True, slots=True)
class MuseTalkModels:
    """The loaded modules, already moved to their device and dtype."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    whisper_encoder: torch.nn.Module
    feature_extractor: object
    precision: Precision


def _placed(module: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    module = module.eval().to(precision.device)
    # Only cast when needed: diffusers logs a notice on every dtype cast, even a no-op one.
    if next(module.parameters()).dtype != precision.dtype:
        module = module.to(dtype=precision.dtype)
    return module


def prepare_models(
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    whisper_encoder: torch.nn.Module,
    feature_extractor: object,
    precision: Precision,
) -> MuseTalkModels:
    """Move all three modules to the device in the working dtype (fp16 on CUDA, as MuseTalk's
    realtime script runs UNet, VAE and whisper; fp32 on CPU)."""
    return MuseTalkModels(
        unet=_placed(unet, precision),
        vae=_placed(vae, precision),
        whisper_encoder=_placed(whisper_encoder, precision),
        feature_extractor=feature_extractor,
        precision=precision,
    )


def load_models(root: str, device: str = "auto") -> tuple[MuseTalkModels, MuseTalkFiles]:
    files = find_files(root)
    precision = select_precision(device)
    unet = load_unet(files.unet_config, files.unet_weights)
    vae = load_vae(files.vae_dir)
    encoder, extractor = load_whisper(files.whisper_dir)
    logger.info(
        "MuseTalk(%s): UNet %.1f M params on %s %s", root,
        sum(p.numel() for p in unet.parameters()) / 1e6, precision.device, precision.dtype,
    )
    return prepare_models(unet, vae, encoder, extractor, precision), files
