"""MuseTalk loaders on tiny random models of the real architectures, saved in the published
folder layout (musetalkV15/, sd-vae/, whisper/) and read back through the real loader."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from musetalk.errors import MuseTalkModelMissing
from musetalk.models import (
    FETCH_COMMAND,
    PUBLISHED_UNET_CONFIG,
    find_files,
    load_models,
    select_precision,
    sinusoidal_encoding,
)

WHISPER_DIM = 32  # tiny stand-in for whisper-tiny's 384; PE and cross-attention follow it


def tiny_unet_config() -> dict:
    config = dict(PUBLISHED_UNET_CONFIG)
    config.update(
        block_out_channels=[16, 32],
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=WHISPER_DIM,
        sample_size=32,
    )
    return config


def build_tiny_folder(root: str, seed: int = 0) -> str:
    """Write random-weight UNet, VAE and whisper encoder in MuseTalk's layout under ``root``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(seed)
    unet_dir = os.path.join(root, "musetalkV15")
    os.makedirs(unet_dir)
    config = {"_class_name": "UNet2DConditionModel", **tiny_unet_config()}
    with open(os.path.join(unet_dir, "musetalk.json"), "w", encoding="utf-8") as fh:
        json.dump(config, fh)
    unet = UNet2DConditionModel.from_config(config)
    torch.save(unet.state_dict(), os.path.join(unet_dir, "unet.pth"))

    # Four blocks = three 2x downsamplings: 256 -> 32, as sd-vae-ft-mse.
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=256,
    )
    vae.save_pretrained(os.path.join(root, "sd-vae"), safe_serialization=True)

    whisper = WhisperModel(
        WhisperConfig(
            d_model=WHISPER_DIM,
            encoder_layers=4,  # 5 hidden states, as whisper-tiny: 10 x 5 = 50 tokens per frame
            encoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_layers=1,
            decoder_attention_heads=2,
            decoder_ffn_dim=64,
            vocab_size=64,
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=3,
            decoder_start_token_id=4,
            begin_suppress_tokens=None,
            suppress_tokens=None,
            max_source_positions=1500,
            max_target_positions=16,
            num_mel_bins=80,
        )
    )
    whisper_dir = os.path.join(root, "whisper")
    whisper.save_pretrained(whisper_dir, safe_serialization=True)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(whisper_dir)
    return root


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return build_tiny_folder(str(tmp_path_factory.mktemp("musetalk")))


def test_find_files_names_missing_file_and_fetch_command(tmp_path):
    with pytest.raises(MuseTalkModelMissing) as err:
        find_files(str(tmp_path / "nowhere"))
    assert FETCH_COMMAND in str(err.value)
    os.makedirs(tmp_path / "musetalkV15")
    (tmp_path / "musetalkV15" / "musetalk.json").write_text("{}")
    with pytest.raises(MuseTalkModelMissing, match="unet.pth"):
        find_files(str(tmp_path))


def test_find_files_reports_the_first_missing_piece(tiny_dir, tmp_path):
    files = find_files(tiny_dir)
    assert files.unet_weights.endswith(os.path.join("musetalkV15", "unet.pth"))
    assert files.vae_weights.endswith("diffusion_pytorch_model.safetensors")
    broken = tmp_path / "broken"
    os.makedirs(broken / "musetalkV15")
    for name in ("musetalk.json", "unet.pth"):
        os.link(os.path.join(tiny_dir, "musetalkV15", name), broken / "musetalkV15" / name)
    with pytest.raises(MuseTalkModelMissing, match="sd-vae"):
        find_files(str(broken))


def test_load_models_shapes_through_real_loader(tiny_dir):
    models, _files = load_models(tiny_dir, "cpu")
    assert models.precision.dtype == torch.float32
    with torch.inference_mode():
        latents = torch.randn(2, 8, 32, 32)
        audio = torch.randn(2, 50, WHISPER_DIM)
        out = models.unet(latents, torch.zeros(1, dtype=torch.long), encoder_hidden_states=audio)
        assert out.sample.shape == (2, 4, 32, 32)
        image = models.vae.decode(out.sample).sample
        assert image.shape == (2, 3, 256, 256)
        posterior = models.vae.encode(image).latent_dist.mode()
        assert posterior.shape == (2, 4, 32, 32)
    assert len(models.whisper_encoder.layers) == 4


def test_unet_weights_round_trip_exactly(tiny_dir):
    models, files = load_models(tiny_dir, "cpu")
    saved = torch.load(files.unet_weights, map_location="cpu", weights_only=True)
    loaded = models.unet.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_mismatched_unet_weights_are_reported(tiny_dir, tmp_path):
    root = tmp_path / "mismatch"
    os.makedirs(root / "musetalkV15")
    for sub in ("sd-vae", "whisper"):
        os.symlink(os.path.join(tiny_dir, sub), root / sub)
    with open(os.path.join(tiny_dir, "musetalkV15", "musetalk.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    config["block_out_channels"] = [8, 16]
    (root / "musetalkV15" / "musetalk.json").write_text(json.dumps(config))
    os.link(os.path.join(tiny_dir, "musetalkV15", "unet.pth"), root / "musetalkV15" / "unet.pth")
    with pytest.raises(MuseTalkModelMissing, match="do not match"):
        load_models(str(root), "cpu")


def test_sinusoidal_encoding_values():
    table = sinusoidal_encoding(50, 384)
    assert table.shape == (50, 384)
    pos, i = 7, 5
    freq = math.exp(-math.log(10000.0) * (2 * i) / 384)
    assert table[pos, 2 * i].item() == pytest.approx(math.sin(pos * freq), abs=1e-6)
    assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos * freq), abs=1e-6)
    assert np.allclose(table[0, 1::2].numpy(), 1.0)


def test_select_precision_cpu():
    assert select_precision("cpu").dtype == torch.float32
    with pytest.raises(ValueError):
        select_precision("tpu")


def test_published_config_is_the_musetalk_shape():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(PUBLISHED_UNET_CONFIG)
    params = sum(p.numel() for p in unet.parameters())
    assert params == pytest.approx(849.9e6, rel=0.002)
