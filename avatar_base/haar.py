"""OpenCV's bundled Haar cascades: the face finder that needs no weights, for every layer.

The avatar store finds every avatar's face boxes with it (Wav2Lip's and MuseTalk's steps take
those boxes under the ``haar`` setting), the face-detector API offers it as ``haar``, and the animated avatar finds its eyes and mouth with
the same cascades. One loader, one rule for "the avatar's face":

Invariant: the face is the largest frontal face whose side is at least a tenth of the frame's
short side (smaller ones are background people), found on a histogram-equalized grey image.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

FRONTAL_FACE = "haarcascade_frontalface_default.xml"

# (x, y, w, h) in pixels, as OpenCV gives it.
HaarBox = tuple[int, int, int, int]


class HaarCascadeMissing(RuntimeError):
    """opencv-python-headless 5.x no longer ships the cascades."""


def load_cascade(name: str = FRONTAL_FACE) -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, name)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise HaarCascadeMissing(
            f"OpenCV's Haar cascade {path} is missing; install opencv-python-headless<5 "
            "(5.x no longer ships the cascades)"
        )
    return cascade


def min_face_side_px(height: int, width: int) -> int:
    """Faces smaller than a tenth of the frame's short side are not the avatar."""
    return max(24, min(height, width) // 10)


def largest_box(boxes: np.ndarray | tuple | list) -> HaarBox | None:
    """The largest of OpenCV's (x, y, w, h) boxes by area, as ints, or None for none."""
    if len(boxes) == 0:
        return None
    x, y, w, h = max(boxes, key=lambda b: int(b[2]) * int(b[3]))
    return int(x), int(y), int(w), int(h)


def largest_face(gray: np.ndarray, cascade: cv2.CascadeClassifier) -> HaarBox | None:
    """The avatar's face in a grey image (see the invariant above), or None."""
    gray = cv2.equalizeHist(gray)
    side = min_face_side_px(*gray.shape[:2])
    return largest_box(cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side)))
