"""The one face-detector API: ``face_detector(kind, models_dir, device).largest_face(image)``.

Two detectors behind it:

* ``haar``: OpenCV's bundled frontal-face cascade. No weights to fetch, fast on a CPU, but it
  misses turned, tilted or partly covered faces and its box stops short of the chin.
* ``s3fd``: the detector upstream Wav2Lip uses (face_alignment's published weights, fetched by
  ``python main.py fetch --profile gpu``); robust to pose and lighting.

``auto`` takes S3FD when its weights are in the models folder and otherwise Haar, with a warning
that names the missing file and the fetch command. Both give the largest face at least a tenth
of the frame's short side (smaller faces are background people, not the avatar).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch import nn

from avatar_base.device import pick_device
from avatar_base.haar import HaarCascadeMissing, load_cascade, min_face_side_px
from avatar_base.haar import largest_face as largest_haar_face
from services.face.boxes import (
    NMS_IOU,
    SCORE_THRESHOLD,
    Detection,
    FaceBox,
    decode_source,
    nms,
    to_face_boxes,
)
from services.face.errors import FETCH_HINT, FaceDetectorError
from services.face.s3fd import BGR_MEAN, source_stride
from services.face.weights import load_s3fd, s3fd_entry, s3fd_weights_path

logger = logging.getLogger(__name__)

ColorOrder = Literal["bgr", "rgb"]
DetectorKind = Literal["auto", "s3fd", "haar"]
DETECTOR_KINDS: tuple[str, ...] = ("auto", "s3fd", "haar")

# S3FD runs on a copy whose long side is at most this: an avatar's face is large, the largest
# anchor is 512 px, and the cost grows with the pixel count (a 1080p frame is 4x the work).
S3FD_LONG_SIDE_PX = 720
S3FD_BATCH = 8
# Five 2x2 poolings: anything smaller leaves the deepest stages with an empty map.
S3FD_MIN_SIDE_PX = 32


def _check_image(image: np.ndarray, color: str) -> None:
    if color not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")


def _largest(boxes: Sequence[FaceBox]) -> FaceBox | None:
    return max(boxes, key=lambda b: b.w * b.h, default=None)


class FaceDetector(abc.ABC):
    """Finds the avatar's face. ``name`` identifies the detector (and its weights) for caches."""

    name: str

    @abc.abstractmethod
    def largest_faces(
        self, images: Sequence[np.ndarray], *, color: ColorOrder
    ) -> list[FaceBox | None]:
        """Per image the largest face as ``(x, y, w, h)`` in its pixels, or None."""

    def largest_face(self, image: np.ndarray, *, color: ColorOrder) -> FaceBox | None:
        return self.largest_faces([image], color=color)[0]


class HaarFaceDetector(FaceDetector):
    name = "haar"

    def __init__(self) -> None:
        try:
            self._cascade = load_cascade()
        except HaarCascadeMissing as exc:
            raise FaceDetectorError(str(exc)) from exc

    def largest_faces(
        self, images: Sequence[np.ndarray], *, color: ColorOrder
    ) -> list[FaceBox | None]:
        code = cv2.COLOR_BGR2GRAY if color == "bgr" else cv2.COLOR_RGB2GRAY
        out: list[FaceBox | None] = []
        for image in images:
            _check_image(image, color)
            face = largest_haar_face(cv2.cvtColor(image, code), self._cascade)
            out.append(None if face is None else FaceBox(*face))
        return out


class S3fdFaceDetector(FaceDetector):
    """S3FD on ``device``; ``detect`` gives every face with its score, best first.

    ``net`` is an ``S3FD`` (or anything with its forward contract, e.g. a test's fake).
    """

    def __init__(
        self,
        net: nn.Module,
        device: str | torch.device,
        name: str = "s3fd",
        *,
        score_threshold: float = SCORE_THRESHOLD,
        long_side_px: int = S3FD_LONG_SIDE_PX,
        batch_size: int = S3FD_BATCH,
    ) -> None:
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.name = name
        self.score_threshold = score_threshold
        self.long_side_px = long_side_px
        self.batch_size = batch_size
        self._mean = torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_file(
        cls, path: str | Path, device: str | torch.device, sha256: str | None
    ) -> S3fdFaceDetector:
        net = load_s3fd(path, device, sha256)
        # The weights' hash prefix names them, so caches keyed on ``name`` follow the weights.
        return cls(net, device, name=f"s3fd-{(sha256 or 'unpinned')[:10]}")

    def largest_faces(
        self, images: Sequence[np.ndarray], *, color: ColorOrder
    ) -> list[FaceBox | None]:
        out: list[FaceBox | None] = []
        for image, dets in zip(images, self.detect(images, color=color), strict=True):
            side = min_face_side_px(*image.shape[:2])
            out.append(_largest([d.box for d in dets if min(d.box.w, d.box.h) >= side]))
        return out

    def detect(self, images: Sequence[np.ndarray], *, color: ColorOrder) -> list[list[Detection]]:
        """Every face per image (score above ``score_threshold`` after NMS), best first."""
        results: list[list[Detection]] = []
        batch: list[np.ndarray] = []
        for image in images:
            _check_image(image, color)
            # Frames of one video share a size and go through the network together.
            if batch and (batch[0].shape != image.shape or len(batch) == self.batch_size):
                results.extend(self._detect_batch(batch, color))
                batch = []
            batch.append(image)
        if batch:
            results.extend(self._detect_batch(batch, color))
        return results

    def _detect_batch(self, images: list[np.ndarray], color: ColorOrder) -> list[list[Detection]]:
        height, width = images[0].shape[:2]
        scale = min(1.0, self.long_side_px / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if min(size) < S3FD_MIN_SIDE_PX:
            raise ValueError(
                f"a {width}x{height} image is too small or too narrow for S3FD (its copy of "
                f"{size[0]}x{size[1]} must be at least {S3FD_MIN_SIDE_PX} px on each side)"
            )
        bgr = [im if color == "bgr" else im[:, :, ::-1] for im in images]
        if scale < 1.0:
            bgr = [cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in bgr]
        pixels = torch.from_numpy(np.ascontiguousarray(np.stack(bgr))).to(self.device)
        x = pixels.permute(0, 3, 1, 2).float() - self._mean
        with torch.inference_mode():
            outputs = self.net(x)
        # Upstream keeps anchors above 0.05, runs NMS, then keeps boxes above 0.5. A box can only
        # be suppressed by a higher-scoring one, so thresholding at 0.5 first gives the same boxes.
        per_image: list[list[np.ndarray]] = [[] for _ in images]
        for i, (conf, loc) in enumerate(outputs):
            decoded = decode_source(conf, loc, source_stride(i), self.score_threshold)
            for n, dets in enumerate(decoded):
                per_image[n].append(dets)
        return [
            to_face_boxes(nms(np.concatenate(parts), NMS_IOU), scale, height, width)
            for parts in per_image
        ]


def face_detector(
    kind: DetectorKind | str, models_dir: str | Path, device: str = "auto"
) -> FaceDetector:
    """The face detector to prepare an avatar with (see the module docstring for ``kind``);
    ``device`` is auto | cpu | cuda, as ``AVATAR_DEVICE`` (``avatar_base.device.pick_device``).

    Raises ``FaceDetectorError`` for an unknown kind or a missing cascade, and
    ``DetectorWeightsError`` when S3FD is asked for (or its file is present for ``auto``) but
    the file is missing, corrupted or not the published checkpoint.
    """
    if kind not in DETECTOR_KINDS:
        raise FaceDetectorError(
            f"face detector {kind!r}: choose one of {', '.join(DETECTOR_KINDS)}"
        )
    if kind == "haar":
        return HaarFaceDetector()
    path = s3fd_weights_path(models_dir)
    if kind == "auto" and not path.exists():
        logger.warning(
            "S3FD face detector weights %s are missing; using OpenCV's Haar cascade instead, "
            "which misses turned or partly covered faces. Fetch them with: %s",
            path, FETCH_HINT,
        )
        return HaarFaceDetector()
    return S3fdFaceDetector.from_file(path, pick_device(device), s3fd_entry().sha256)
