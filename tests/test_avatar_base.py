"""avatar_base: the one device picker, and the layering rule it exists for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from avatar_base.device import pick_device

REPO = Path(__file__).resolve().parent.parent
# Who may not import whom: model libraries never reach up into the services.
FORBIDDEN = {
    "avatar_base": {"services", "wav2lip", "musetalk"},
    "wav2lip": {"services", "musetalk"},
    "musetalk": {"services"},
}


def _imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_model_libraries_do_not_import_upward(package: str) -> None:
    offences = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted((REPO / package).rglob("*.py"))
        for name in sorted(_imported_packages(path) & FORBIDDEN[package])
    ]
    assert not offences, offences


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
