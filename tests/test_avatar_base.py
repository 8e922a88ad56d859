"""avatar_base: the one device picker, file digests and cache writes, the Haar face finder, and
the layering rule it exists for."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import numpy as np

import pytest
import torch

from avatar_base.device import pick_device
from avatar_base.files import file_sha256, save_npz_atomically
from avatar_base.haar import HaarCascadeMissing, largest_face, load_cascade

REPO = Path(__file__).resolve().parent.parent
# Who may not import whom: model libraries never reach up into the services.
FORBIDDEN = {
    "avatar_base": {"services", "wav2lip", "musetalk"},
    "wav2lip": {"services", "musetalk"},
    "musetalk": {"services"},
}
# Applications built on a model library, not part of it: `python -m wav2lip` takes its face from
# the one avatar store (services/avatar), as the page's uploads do, instead of keeping a cache of
# its own. Only this entry point may reach up; the library's modules still may not.
APPLICATIONS = {"wav2lip/__main__.py"}


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
        if str(path.relative_to(REPO)) not in APPLICATIONS
        for name in sorted(_imported_packages(path) & FORBIDDEN[package])
    ]
    assert not offences, offences


def test_the_applications_exempt_from_the_layering_rule_exist_and_are_entry_points() -> None:
    for name in APPLICATIONS:
        assert (REPO / name).is_file(), name
        assert name.endswith("/__main__.py"), name


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


def test_file_sha256_reads_past_one_block(tmp_path) -> None:
    blob = np.random.default_rng(0).integers(0, 256, (3 << 20) + 17, np.uint8).tobytes()
    path = tmp_path / "weights.bin"
    path.write_bytes(blob)
    assert file_sha256(path) == hashlib.sha256(blob).hexdigest()


def test_a_cache_write_that_fails_leaves_neither_a_file_nor_a_temporary(tmp_path) -> None:
    path = tmp_path / "avatar.npz"
    save_npz_atomically(path, frames=np.arange(6).reshape(2, 3))
    with np.load(path, allow_pickle=False) as data:
        assert data["frames"].tolist() == [[0, 1, 2], [3, 4, 5]]
    # A write that fails half-way (its second array cannot be made): the old cache stays whole.
    class Unconvertible:
        def __array__(self, *args, **kwargs):
            raise ValueError("cannot become an array")

    with pytest.raises(ValueError, match="cannot become an array"):
        save_npz_atomically(path, frames=np.zeros((4, 4)), masks=Unconvertible())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avatar.npz"]
    with np.load(path, allow_pickle=False) as data:
        assert data["frames"].shape == (2, 3)


def test_the_avatar_face_is_the_largest_and_a_tiny_one_is_background():
    import cv2
    from skimage import data

    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)  # 512 x 512, one face of ~90 px
    cascade = load_cascade()
    x, y, w, h = largest_face(gray, cascade)
    assert 60 <= w <= 200 and 100 <= x <= 300 and 0 <= y <= 200
    # The face (~106 px found) on a grey canvas: found on 800 px, but on 1200 px it is under a
    # tenth of the frame's short side, a background person, not the avatar.
    face = gray[30:200, 140:310]
    for side, found in ((800, True), (1200, False)):
        canvas = np.full((side, side), 128, np.uint8)
        canvas[100:270, 100:270] = face
        assert (largest_face(canvas, cascade) is not None) == found, side


def test_a_missing_cascade_names_the_file_and_the_fix():
    with pytest.raises(HaarCascadeMissing, match=r"haarcascade_nothing\.xml.*opencv-python-headless<5"):
        load_cascade("haarcascade_nothing.xml")
