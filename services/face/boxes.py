"""S3FD post-processing: anchors, box decoding and non-maximum suppression (numpy + torch).

Anchor layout (S3FD paper, section 3.1, and the published weights): source ``i`` has stride
``s = 4 * 2**i``; the cell at row ``r``, column ``c`` holds one square anchor centred at
``(s/2 + c*s, s/2 + r*s)`` with side ``4*s`` (16 .. 512 px). ``loc`` holds SSD offsets with
variances 0.1 (centre) and 0.2 (log-size)::

    cx = ax + loc0 * 0.1 * side        w = side * exp(loc2 * 0.2)
    cy = ay + loc1 * 0.1 * side        h = side * exp(loc3 * 0.2)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2
ANCHOR_STRIDES = 4  # anchor side / stride
NMS_IOU = 0.3
SCORE_THRESHOLD = 0.5
# Bounds the NMS work when scores are flat (untrained weights); trained weights leave far
# fewer candidates above the threshold on a portrait.
PRE_NMS_TOP_K = 5000


class FaceBox(NamedTuple):
    """A face in image pixels: top-left corner and size (unpacks as ``x, y, w, h``)."""

    x: int
    y: int
    w: int
    h: int


class Detection(NamedTuple):
    box: FaceBox
    score: float


def decode_source(
    conf_logits: torch.Tensor, loc: torch.Tensor, stride: int, score_threshold: float
) -> list[np.ndarray]:
    """One source's ``(N,2,H,W)`` logits and ``(N,4,H,W)`` offsets -> per image an
    ``(K, 5)`` float array of ``x1, y1, x2, y2, score`` for anchors scoring above the threshold."""
    scores = torch.softmax(conf_logits.float(), dim=1)[:, 1]
    image_idx, rows, cols = torch.nonzero(scores > score_threshold, as_tuple=True)
    offsets = loc.float()[image_idx, :, rows, cols]  # (K, 4)
    side = float(ANCHOR_STRIDES * stride)
    anchor_x = stride / 2 + cols.float() * stride
    anchor_y = stride / 2 + rows.float() * stride
    cx = anchor_x + offsets[:, 0] * CENTER_VARIANCE * side
    cy = anchor_y + offsets[:, 1] * CENTER_VARIANCE * side
    w = side * torch.exp(offsets[:, 2] * SIZE_VARIANCE)
    h = side * torch.exp(offsets[:, 3] * SIZE_VARIANCE)
    boxes = torch.stack(
        [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, scores[image_idx, rows, cols]], dim=1
    ).cpu().numpy().astype(np.float64)
    owner = image_idx.cpu().numpy()
    return [boxes[owner == n] for n in range(conf_logits.shape[0])]


def nms(dets: np.ndarray, iou_threshold: float = NMS_IOU, top_k: int = PRE_NMS_TOP_K) -> np.ndarray:
    """Greedy NMS on ``(K, 5)`` ``x1, y1, x2, y2, score`` rows; returns the kept rows, best first.

    A box is dropped when it overlaps an already kept (higher-scoring) box by IoU > threshold.
    """
    if len(dets) == 0:
        return dets.reshape(0, 5)
    order = np.argsort(-dets[:, 4], kind="stable")[:top_k]
    x1, y1, x2, y2 = (dets[:, i] for i in range(4))
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        iw = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return dets[keep]


def to_face_boxes(
    dets: np.ndarray, scale: float, height: int, width: int
) -> list[Detection]:
    """Rows of ``x1, y1, x2, y2, score`` found on an image resized by ``scale`` -> detections in
    the original image's pixels, clipped to it; boxes that vanish when clipped are dropped."""
    out = []
    for x1, y1, x2, y2, score in dets:
        left = int(np.clip(np.floor(x1 / scale), 0, width))
        top = int(np.clip(np.floor(y1 / scale), 0, height))
        right = int(np.clip(np.ceil(x2 / scale), 0, width))
        bottom = int(np.clip(np.ceil(y2 / scale), 0, height))
        if right > left and bottom > top:
            out.append(Detection(FaceBox(left, top, right - left, bottom - top), float(score)))
    return out
