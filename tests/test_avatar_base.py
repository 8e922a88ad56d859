"""avatar_base: the one device picker, and the layering rule it exists for."""

from __future__ import annotations

import pytest
import torch

from avatar_base.device import pick_device


@pytest.mark.parametrize("cuda", [False, True])
def test_pick_device_auto_takes_the_gpu_when_torch_sees_one(monkeypatch, cuda: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert pick_device("auto") == torch.device("cuda" if cuda else "cpu")
    assert pick_device("cpu") == torch.device("cpu")


def test_pick_device_names_the_cause_of_a_cuda_request_without_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="AVATAR_DEVICE=cuda .* no CUDA GPU"):
        pick_device("cuda")


def test_pick_device_refuses_other_names() -> None:
    for name in ("tpu", "cuda:0", "mps", ""):
        with pytest.raises(ValueError, match="auto, cpu or cuda"):
            pick_device(name)
