"""The generator matches the published architecture: keys, sizes, shapes, skip order."""

from __future__ import annotations

import torch

from wav2lip.model import Conv2d, Wav2Lip


def test_state_dict_matches_published_layout() -> None:
    model = Wav2Lip()
    state = model.state_dict()
    assert len(state) == 352
    assert sum(p.numel() for p in model.parameters()) == 36_298_035
    assert sum(k.endswith("num_batches_tracked") for k in state) == 50
    # Spot checks of names and shapes read from the published model.
    assert state["face_encoder_blocks.0.0.conv_block.0.weight"].shape == (16, 6, 7, 7)
    assert state["audio_encoder.3.conv_block.0.weight"].shape == (64, 32, 3, 3)
    assert state["face_decoder_blocks.1.0.conv_block.0.weight"].shape == (1024, 512, 3, 3)
    assert state["face_decoder_blocks.6.0.conv_block.0.weight"].shape == (160, 64, 3, 3)
    assert state["output_block.0.conv_block.0.weight"].shape == (32, 80, 3, 3)
    assert state["output_block.1.weight"].shape == (3, 32, 1, 1)
    assert "output_block.1.bias" in state


def test_forward_4d_and_5d_shapes_and_range() -> None:
    torch.manual_seed(0)
    model = Wav2Lip().eval()
    with torch.inference_mode():
        out = model(torch.randn(3, 1, 80, 16), torch.rand(3, 6, 96, 96))
        assert out.shape == (3, 3, 96, 96)
        assert float(out.min()) > 0.0 and float(out.max()) < 1.0
        seq = model(torch.randn(2, 5, 1, 80, 16), torch.rand(2, 6, 5, 96, 96))
        assert seq.shape == (2, 3, 5, 96, 96)


def test_5d_input_equals_per_step_4d_calls() -> None:
    torch.manual_seed(1)
    model = Wav2Lip().eval()
    mel = torch.randn(2, 3, 1, 80, 16)
    faces = torch.rand(2, 6, 3, 96, 96)
    with torch.inference_mode():
        seq = model(mel, faces)
        for t in range(3):
            step = model(mel[:, t], faces[:, :, t])
            torch.testing.assert_close(seq[:, :, t], step, rtol=1e-4, atol=1e-5)


def test_residual_is_added_after_batchnorm_before_relu() -> None:
    unit = Conv2d(4, 4, 3, 1, 1, residual=True).eval()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        expected = torch.relu(unit.conv_block(x) + x)
        torch.testing.assert_close(unit(x), expected)
