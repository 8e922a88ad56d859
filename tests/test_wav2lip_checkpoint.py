"""Every checkpoint format users have loads strictly; anything else fails with a clear message."""

from __future__ import annotations

import collections
import logging
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from wav2lip.checkpoint import load_generator
from wav2lip.errors import Wav2LipCheckpointError
from wav2lip.model import Wav2Lip


def _random_generator(seed: int) -> Wav2Lip:
    torch.manual_seed(seed)
    model = Wav2Lip()
    # Non-trivial BN statistics, so a file that dropped buffers would give different outputs.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(1234)
    return model.eval()


@pytest.fixture(scope="module")
def reference() -> Wav2Lip:
    return _random_generator(7)


@pytest.fixture(scope="module")
def training_checkpoint(reference: Wav2Lip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shaped like wav2lip_train.save_checkpoint under torch 1.1: legacy pickle, Adam state,
    counters, and a DataParallel ``module.`` prefix."""
    train_copy = _random_generator(7).train()
    optimizer = torch.optim.Adam(train_copy.parameters(), lr=1e-4)
    # One real Adam step on the output layer only keeps the file small; the format is the same.
    loss = train_copy.output_block[1].weight.square().sum() + train_copy.output_block[1].bias.sum()
    loss.backward()
    for p in train_copy.parameters():
        if p is not train_copy.output_block[1].weight and p is not train_copy.output_block[1].bias:
            p.grad = None
    optimizer.step()
    state = collections.OrderedDict(("module." + k, v) for k, v in reference.state_dict().items())
    path = tmp_path_factory.mktemp("ckpt") / "wav2lip_gan.pth"
    torch.save(
        {
            "state_dict": state,
            "optimizer": optimizer.state_dict(),
            "global_step": 120000,
            "global_epoch": 77,
        },
        path,
        _use_new_zipfile_serialization=False,
    )
    return path


@pytest.fixture(scope="module")
def torchscript_file(reference: Wav2Lip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ts") / "Wav2Lip-SD-GAN.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        torch.jit.script(reference).save(str(path))
    return path


def _outputs(model: Wav2Lip) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    mel = torch.randn(2, 1, 80, 16, generator=gen)
    faces = torch.rand(2, 6, 96, 96, generator=gen)
    with torch.inference_mode():
        return model(mel, faces)


def test_training_checkpoint_is_legacy_format_and_loads(
    training_checkpoint: Path, reference: Wav2Lip, caplog: pytest.LogCaptureFixture
) -> None:
    assert not zipfile.is_zipfile(training_checkpoint)  # really the pre-1.6 serialisation
    with caplog.at_level(logging.WARNING, logger="wav2lip.checkpoint"):
        model, info = load_generator(str(training_checkpoint))
    assert info.container == "training checkpoint" and info.global_step == 120000
    assert "non-commercial" in caplog.text
    loaded = model.state_dict()
    assert len(loaded) == 352
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert torch.equal(_outputs(model), _outputs(reference))


def test_torchscript_loads_and_gives_identical_outputs(
    torchscript_file: Path, training_checkpoint: Path
) -> None:
    assert zipfile.is_zipfile(torchscript_file)
    scripted, info = load_generator(str(torchscript_file))
    assert info.container == "torchscript"
    legacy, _ = load_generator(str(training_checkpoint))
    assert torch.equal(_outputs(scripted), _outputs(legacy))


def test_bare_state_dict_without_bn_counters_loads(reference: Wav2Lip, tmp_path: Path) -> None:
    state = {
        k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    path = tmp_path / "bare.pth"
    torch.save(state, path)
    model, info = load_generator(str(path))
    assert info.container == "state dict"
    assert torch.equal(_outputs(model), _outputs(reference))


def _save(tmp_path: Path, obj: object, name: str = "bad.pth") -> str:
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(Wav2LipCheckpointError, match="nowhere.pth: no such file"):
        load_generator(str(tmp_path / "nowhere.pth"))


def test_dict_without_weights(tmp_path: Path) -> None:
    path = _save(tmp_path, {"global_step": 3, "optimizer": {"state": {}, "param_groups": []}})
    with pytest.raises(
        Wav2LipCheckpointError,
        match=r"a dict with 2 keys \['global_step', 'optimizer'\] but no generator weights",
    ):
        load_generator(path)


def test_discriminator_checkpoint_is_recognised(tmp_path: Path) -> None:
    disc = {
        "face_encoder_blocks.0.0.conv_block.0.weight": torch.zeros(32, 3, 7, 7),
        "binary_pred.0.weight": torch.zeros(1, 512, 1, 1),
    }
    path = _save(
        tmp_path, {"state_dict": disc, "optimizer": {}, "global_step": 1, "global_epoch": 1}
    )
    with pytest.raises(Wav2LipCheckpointError, match="discriminator checkpoint"):
        load_generator(path)


def test_syncnet_checkpoint_is_recognised(tmp_path: Path) -> None:
    sync = {
        "face_encoder.0.conv_block.0.weight": torch.zeros(32, 15, 7, 7),
        "audio_encoder.0.conv_block.0.weight": torch.zeros(32, 1, 3, 3),
    }
    with pytest.raises(Wav2LipCheckpointError, match="SyncNet"):
        load_generator(_save(tmp_path, {"state_dict": sync}))


def test_wrong_shapes_and_missing_keys(reference: Wav2Lip, tmp_path: Path) -> None:
    state = dict(reference.state_dict())
    state["output_block.1.weight"] = torch.zeros(3, 16, 1, 1)
    with pytest.raises(
        Wav2LipCheckpointError, match=r"output_block.1.weight has shape \(3, 16, 1, 1\)"
    ):
        load_generator(_save(tmp_path, state, "shape.pth"))
    del state["output_block.1.bias"]
    with pytest.raises(Wav2LipCheckpointError, match="1 missing"):
        load_generator(_save(tmp_path, state, "missing.pth"))


def test_arbitrary_pickle_is_refused(tmp_path: Path) -> None:
    # A pickled Path object: weights_only loading must refuse rather than execute anything.
    with pytest.raises(Wav2LipCheckpointError, match="refusing to unpickle.*Unsupported global"):
        load_generator(_save(tmp_path, {"state_dict": Path("/etc")}))


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "download.html"
    path.write_bytes(b"<html>Sorry, this link has expired</html>")
    with pytest.raises(Wav2LipCheckpointError, match="download.html: not a PyTorch file"):
        load_generator(str(path))


def test_truncated_file(training_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "partial.pth"
    path.write_bytes(training_checkpoint.read_bytes()[:4096])
    with pytest.raises(Wav2LipCheckpointError, match="partial.pth: not a readable PyTorch file"):
        load_generator(str(path))
