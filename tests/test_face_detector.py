"""services/face: our S3FD against the published checkpoint's layout, its decoding, the loader's
safety checks, and the auto -> Haar fallback. Random weights only; nothing downloads."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

from avatar_base.files import file_sha256
from services.face import (
    DetectorWeightsError,
    FaceBox,
    FaceDetectorError,
    HaarFaceDetector,
    S3fdFaceDetector,
    face_detector,
)
from services.face.boxes import decode_source, nms
from services.face.s3fd import S3FD
from services.face.weights import load_s3fd, s3fd_weights_path
from services.fetch_manifest import UrlFile, entries_for, entry_named

FETCH = "python main.py fetch --profile gpu"


def _conv(cout: int, cin: int, k: int) -> dict[str, tuple[int, ...]]:
    return {"weight": (cout, cin, k, k), "bias": (cout,)}


# Written from the published architecture (face_alignment's sfd net, S3FD paper table 1), not
# from our module: name -> (out, in, kernel) of every conv, plus the three L2Norm scales.
_CONVS = {
    "conv1_1": (64, 3, 3), "conv1_2": (64, 64, 3),
    "conv2_1": (128, 64, 3), "conv2_2": (128, 128, 3),
    "conv3_1": (256, 128, 3), "conv3_2": (256, 256, 3), "conv3_3": (256, 256, 3),
    "conv4_1": (512, 256, 3), "conv4_2": (512, 512, 3), "conv4_3": (512, 512, 3),
    "conv5_1": (512, 512, 3), "conv5_2": (512, 512, 3), "conv5_3": (512, 512, 3),
    "fc6": (1024, 512, 3), "fc7": (1024, 1024, 1),
    "conv6_1": (256, 1024, 1), "conv6_2": (512, 256, 3),
    "conv7_1": (128, 512, 1), "conv7_2": (256, 128, 3),
    "conv3_3_norm_mbox_conf": (4, 256, 3), "conv3_3_norm_mbox_loc": (4, 256, 3),
    "conv4_3_norm_mbox_conf": (2, 512, 3), "conv4_3_norm_mbox_loc": (4, 512, 3),
    "conv5_3_norm_mbox_conf": (2, 512, 3), "conv5_3_norm_mbox_loc": (4, 512, 3),
    "fc7_mbox_conf": (2, 1024, 3), "fc7_mbox_loc": (4, 1024, 3),
    "conv6_2_mbox_conf": (2, 512, 3), "conv6_2_mbox_loc": (4, 512, 3),
    "conv7_2_mbox_conf": (2, 256, 3), "conv7_2_mbox_loc": (4, 256, 3),
}
PUBLISHED_SHAPES: dict[str, tuple[int, ...]] = {
    f"{name}.{part}": shape
    for name, (cout, cin, k) in _CONVS.items()
    for part, shape in _conv(cout, cin, k).items()
} | {"conv3_3_norm.weight": (256,), "conv4_3_norm.weight": (512,), "conv5_3_norm.weight": (512,)}


def test_s3fd_has_exactly_the_published_checkpoint_keys_and_shapes() -> None:
    state = S3FD().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == PUBLISHED_SHAPES
    # 22,459,110 float32 values = 89,836,440 bytes of tensors; the published file is
    # 89,843,225 bytes (the rest is pickle framing for 65 tensors).
    assert sum(v.numel() for v in state.values()) == 22_459_110
    net = S3FD()
    for name, scale in (("conv3_3_norm", 10.0), ("conv4_3_norm", 8.0), ("conv5_3_norm", 5.0)):
        assert torch.all(net.get_submodule(name).weight == scale)


# The published file predates torch's zip format (a legacy pickle by its size); both must load.
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_random_weights_round_trip_through_the_strict_loader(
    tmp_path: Path, zip_format: bool
) -> None:
    torch.manual_seed(0)
    original = S3FD()
    path = tmp_path / "s3fd.pth"
    torch.save(original.state_dict(), path, _use_new_zipfile_serialization=zip_format)
    loaded = load_s3fd(path, "cpu", sha256=file_sha256(path))
    assert not loaded.training
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    detector = S3fdFaceDetector.from_file(path, "cpu", sha256=file_sha256(path))
    assert detector.name == f"s3fd-{file_sha256(path)[:10]}"


def test_decode_places_anchors_and_applies_offsets() -> None:
    stride, side = 8, 32.0
    conf = torch.zeros(2, 2, 3, 4)
    conf[:, 0] = 5.0  # background everywhere ...
    conf[0, :, 1, 2] = torch.tensor([0.0, 5.0])  # ... but a face at row 1, column 2 of image 0
    loc = torch.zeros(2, 4, 3, 4)
    loc[0, :, 1, 2] = torch.tensor([1.0, -1.0, math.log(2.0) / 0.2, 0.0])
    per_image = decode_source(conf, loc, stride, score_threshold=0.5)
    assert [len(d) for d in per_image] == [1, 0]
    (x1, y1, x2, y2, score), = per_image[0]
    # Anchor centre (4 + 2*8, 4 + 1*8) = (20, 12); centre moves by +-0.1*side, width doubles.
    cx, cy, w, h = 20 + 0.1 * side, 12 - 0.1 * side, 2 * side, side
    expected = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    np.testing.assert_allclose([x1, y1, x2, y2], expected, atol=1e-4)
    assert score == pytest.approx(1 / (1 + math.exp(-5.0)), abs=1e-6)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    dets = np.array([
        [0, 0, 10, 10, 0.6],  # IoU 81/119 = 0.68 with the best: dropped
        [1, 1, 11, 11, 0.9],
        [5, 0, 15, 10, 0.8],  # IoU with the best: 54/146 = 0.37 > 0.3: dropped
        [30, 30, 40, 40, 0.7],  # apart: kept
        [8, 1, 18, 11, 0.65],  # IoU with the best 30/170 = 0.18: kept
    ])
    kept = nms(dets, iou_threshold=0.3)
    np.testing.assert_array_equal(kept[:, 4], [0.9, 0.7, 0.65])
    assert nms(np.zeros((0, 5))).shape == (0, 5)


class FakeS3fd(nn.Module):
    """Outputs for a 256x256 network input: faces at chosen (source, row, column) cells with the
    given face logit, background elsewhere; every offset is zero, so boxes are the anchors."""

    def __init__(self, faces: dict[tuple[int, int, int], float]) -> None:
        super().__init__()
        self.faces = faces
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self.inputs.append(x)
        outputs = []
        for i in range(6):
            cells = 256 // (4 * 2**i)
            conf = torch.zeros(x.shape[0], 2, cells, cells)
            conf[:, 0] = 10.0
            for (source, row, col), logit in self.faces.items():
                if source == i:
                    conf[:, :, row, col] = torch.tensor([0.0, logit])
            outputs.append((conf, torch.zeros(x.shape[0], 4, cells, cells)))
        return outputs


def test_detector_scales_boxes_back_and_picks_the_largest_real_face() -> None:
    # Stride 8, 32 px anchors at (4 + 8c, 4 + 8r) on the 256x256 copy of a 512x512 frame.
    fake = FakeS3fd({(1, 10, 10): 4.0, (1, 20, 25): 6.0})
    detector = S3fdFaceDetector(fake, "cpu", long_side_px=256)
    frame = np.full((512, 512, 3), (10, 20, 30), dtype=np.uint8)  # BGR
    dets = detector.detect([frame], color="bgr")[0]
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    assert dets[0].box == FaceBox(2 * (204 - 16), 2 * (164 - 16), 64, 64)
    assert detector.largest_face(frame, color="bgr") in {d.box for d in dets}
    # Frames of different sizes go through the network in separate batches.
    small_dets = detector.detect([frame, frame[:256, :256].copy()], color="bgr")[1]
    assert small_dets[0].box == FaceBox(204 - 16, 164 - 16, 32, 32)
    # The network saw BGR minus the Caffe means, whichever order the caller holds.
    np.testing.assert_allclose(fake.inputs[0][0, :, 0, 0], [10 - 104, 20 - 117, 30 - 123])
    detector.detect([frame[:, :, ::-1].copy()], color="rgb")
    np.testing.assert_allclose(fake.inputs[1][0, :, 0, 0], [10 - 104, 20 - 117, 30 - 123])
    # A stride-4 anchor (16 px on the 256 px copy) is 62 px of a 1000 px frame, under a tenth
    # of its short side: a background person, not the avatar.
    big = S3fdFaceDetector(FakeS3fd({(0, 30, 30): 4.0}), "cpu", long_side_px=256)
    assert big.largest_face(np.zeros((1000, 1000, 3), np.uint8), color="bgr") is None


def test_random_s3fd_forward_on_cpu_gives_boxes_inside_the_image() -> None:
    torch.manual_seed(0)
    net = S3FD().eval()
    with torch.inference_mode():
        outputs = net(torch.zeros(1, 3, 256, 256))
    # fc6's padding of 3 (as trained) makes the deeper maps 4 cells larger than 256/stride.
    sizes = [(conf.shape[1:], loc.shape[1:]) for conf, loc in outputs]
    assert sizes == [
        ((2, 64, 64), (4, 64, 64)), ((2, 32, 32), (4, 32, 32)), ((2, 16, 16), (4, 16, 16)),
        ((2, 12, 12), (4, 12, 12)), ((2, 6, 6), (4, 6, 6)), ((2, 3, 3), (4, 3, 3)),
    ]
    detector = S3fdFaceDetector(net, "cpu", score_threshold=0.0, long_side_px=256)
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (300, 512, 3), dtype=np.uint8)  # run on a 150x256 copy
    for image in (rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), wide):
        dets = detector.detect([image], color="rgb")[0]
        assert dets, "score_threshold=0 keeps every anchor before NMS"
        height, width = image.shape[:2]
        for (x, y, w, h), score in dets:
            assert 0 <= x < x + w <= width and 0 <= y < y + h <= height
            assert 0.0 <= score <= 1.0


def test_auto_without_weights_falls_back_to_haar_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="services.face.detector"):
        detector = face_detector("auto", tmp_path, device="cpu")
    assert isinstance(detector, HaarFaceDetector) and detector.name == "haar"
    assert str(tmp_path / "face" / "s3fd-619a316812.pth") in caplog.text
    assert FETCH in caplog.text
    rgb = data.astronaut()
    box = detector.largest_face(rgb, color="rgb")
    assert box is not None
    x, y, w, h = box
    # The astronaut's face sits around x 180..270, y 70..170 in the 512x512 photo.
    assert 180 <= x + w / 2 <= 270 and 70 <= y + h / 2 <= 170
    assert detector.largest_face(rgb[:, :, ::-1].copy(), color="bgr") == box
    blank = np.zeros((64, 64, 3), np.uint8)
    assert face_detector("haar", tmp_path).largest_face(blank, color="bgr") is None


def test_manifest_entry_is_where_the_detector_looks(tmp_path: Path) -> None:
    entry = entry_named("s3fd")
    assert isinstance(entry, UrlFile) and entry in entries_for("gpu")
    assert entry.url == "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"
    assert entry.sha256 is not None and entry.sha256.startswith("619a316812")
    assert "BSD-3-Clause" in entry.license
    assert s3fd_weights_path(tmp_path) == tmp_path / entry.dest


def test_corrupted_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    path = s3fd_weights_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>404 Not Found</html>")
    # Present but wrong: "auto" must not quietly fall back to Haar.
    with pytest.raises(DetectorWeightsError) as info:
        face_detector("auto", tmp_path, device="cpu")
    message = str(info.value)
    assert str(path) in message and "sha256" in message and FETCH in message
    # Unpinned, the loader still refuses what is not a tensor checkpoint, or half of one.
    with pytest.raises(DetectorWeightsError, match="cannot be read") as info:
        load_s3fd(path, "cpu", sha256=None)
    assert str(path) in str(info.value) and FETCH in str(info.value)
    whole = tmp_path / "whole.pth"
    torch.save(S3FD().state_dict(), whole)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DetectorWeightsError, match="cannot be read"):
        load_s3fd(truncated, "cpu", sha256=None)


def test_missing_weights_for_s3fd_kind_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DetectorWeightsError) as info:
        face_detector("s3fd", tmp_path, device="cpu")
    assert str(s3fd_weights_path(tmp_path)) in str(info.value) and FETCH in str(info.value)
    with pytest.raises(FaceDetectorError, match="choose one of"):
        face_detector("mtcnn", tmp_path)


class NotATensor:
    pass


def test_loader_never_unpickles_objects_and_wants_the_exact_layers(tmp_path: Path) -> None:
    doctored = tmp_path / "doctored.pth"
    torch.save({"conv1_1.weight": NotATensor()}, doctored)
    with pytest.raises(DetectorWeightsError, match="cannot be read"):
        load_s3fd(doctored, "cpu", sha256=None)
    partial = tmp_path / "partial.pth"
    state = S3FD().state_dict()
    del state["conv7_2_mbox_loc.bias"]
    torch.save(state, partial)
    with pytest.raises(DetectorWeightsError, match="do not match the S3FD layers"):
        load_s3fd(partial, "cpu", sha256=None)
