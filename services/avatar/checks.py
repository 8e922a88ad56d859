"""Is this picture a face we can animate? Clear refusals instead of a bad avatar.

Run on the normalised first frame (long side <= 720 px) of a photo or video:

- no face / several faces: the largest frontal face is the avatar; the others are named in a
  warning (which one was used, where);
- too small: the face's side is under ``MIN_FACE_FRACTION`` of the short side (or 40 px);
- turned away: no frontal face, but a profile or a tilted face is there;
- an open mouth: the dark mouth cavity covers ``MAX_OPEN_MOUTH`` of the lip region (the
  animation opens the jaw from the closed lip line; an open source mouth animates badly);
- blurred: the variance of the Laplacian of the face, resized to 256 px, is under
  ``MIN_SHARPNESS``.

The thresholds were set on scikit-image's astronaut (sharpness 168, dark mouth fraction 0.0)
against the same photo blurred (sigma 2: 27, 4: 12) and animated open (openness 0.4: 0.11,
0.6: 0.19, 1.0: 0.32).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar_base.haar import load_cascade, min_face_side_px
from services.avatar.errors import AvatarError
from services.avatar.face_geometry import FaceGeometry

MIN_FACE_FRACTION = 0.1
MIN_FACE_PX = 40
MIN_SHARPNESS = 15.0
MAX_OPEN_MOUTH = 0.15
_TILTS_DEG = (-35, 35)

Box = tuple[int, int, int, int]  # x, y, w, h


@dataclass(frozen=True, slots=True)
class FaceFound:
    box: Box
    others: tuple[Box, ...]  # further faces, ignored

    def warnings(self) -> list[str]:
        if not self.others:
            return []
        x, y, w, h = self.box
        return [f"{1 + len(self.others)} faces found; the largest ({w}x{h} px at x={x}, y={y}) is the avatar"]


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def find_face(rgb: np.ndarray) -> FaceFound:
    """The avatar's face, or the reason there is none (``AvatarError``)."""
    gray = _gray(rgb)
    h, w = gray.shape
    faces = load_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    boxes = sorted((tuple(int(v) for v in f) for f in faces), key=lambda b: -b[2] * b[3])
    if not boxes:
        _why_no_face(gray)
    big_enough = max(MIN_FACE_PX, int(MIN_FACE_FRACTION * min(h, w)), min_face_side_px(h, w))
    largest = boxes[0]
    if largest[2] < big_enough:
        raise AvatarError(
            "face_too_small",
            f"the face is too small ({largest[2]} px in a {w}x{h} picture); come closer or crop "
            f"the photo so the face is at least {big_enough} px wide (a tenth of the picture)",
        )
    # Smaller faces than a third of the avatar's are background people, not worth a warning.
    others = tuple(b for b in boxes[1:] if b[2] >= max(big_enough, largest[2] // 3))
    return FaceFound(largest, others)  # type: ignore[arg-type]


def _why_no_face(gray: np.ndarray) -> None:
    profile = load_cascade("haarcascade_profileface.xml")
    side = min_face_side_px(*gray.shape)
    for img in (gray, cv2.flip(gray, 1)):
        if len(profile.detectMultiScale(img, scaleFactor=1.1, minNeighbors=6, minSize=(side, side))):
            raise AvatarError("face_turned", "the face is turned away; use a photo looking straight at the camera")
    h, w = gray.shape
    frontal = load_cascade()
    for angle in _TILTS_DEG:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        rotated = cv2.warpAffine(gray, m, (w, h))
        if len(frontal.detectMultiScale(rotated, scaleFactor=1.1, minNeighbors=12, minSize=(side, side))):
            raise AvatarError("face_turned", "the head is tilted; use a photo with the head upright, facing the camera")
    raise AvatarError("no_face", "no face found; use a well-lit photo of one face looking at the camera")


def sharpness(rgb: np.ndarray, box: Box) -> float:
    x, y, w, h = box
    face = cv2.cvtColor(rgb[y : y + h, x : x + w], cv2.COLOR_RGB2GRAY)
    face = cv2.resize(face, (256, 256), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(face, cv2.CV_64F).var())


def open_mouth_fraction(rgb: np.ndarray, geometry: FaceGeometry) -> float:
    """Share of the lip region darker than a third of the cheeks' brightness (the cavity)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    fx, fy, fw, fh = geometry.face_box
    cheeks = gray[fy + int(0.45 * fh) : fy + int(0.65 * fh), fx + int(0.3 * fw) : fx + int(0.7 * fw)]
    if cheeks.size == 0:
        return 0.0
    mw = geometry.mouth_width
    x0, x1 = int(geometry.mouth_x - 0.25 * mw), int(geometry.mouth_x + 0.25 * mw)
    # Around the lip line, more above it: on an open mouth the found line is often the lower lip.
    y0, y1 = int(geometry.lip_line_y - 0.35 * mw), int(geometry.lip_line_y + 0.25 * mw)
    region = gray[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)]
    if region.size == 0:
        return 0.0
    return float((region < 0.35 * float(np.median(cheeks))).mean())


def check_quality(rgb: np.ndarray, face: FaceFound, geometry: FaceGeometry) -> None:
    score = sharpness(rgb, face.box)
    if score < MIN_SHARPNESS:
        raise AvatarError("blurred", f"the face is blurred (sharpness {score:.0f}, needs {MIN_SHARPNESS:.0f}); use a sharper photo")
    if open_mouth_fraction(rgb, geometry) > MAX_OPEN_MOUTH:
        raise AvatarError("mouth_open", "the mouth is open in this photo; use one with the mouth closed (it animates badly otherwise)")
