"""Where the mouth, eyes and jaw are in a photo, from OpenCV's bundled Haar cascades.

No landmark model ships in a package we can install beside numpy 2 (mediapipe needs numpy<2),
so the face box comes from the frontal-face cascade, eyes and mouth from the eye and smile
cascades searched inside it, and everything else from typical face proportions. Two image
measurements refine the guesses: the iris is the darkest blob of an eye box, and the lip line is
found from the row profile of the mouth box (the lower edge of visible teeth, else the darkest
row). When a cascade finds nothing, the proportions alone are used and a warning is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from avatar_base.haar import FRONTAL_FACE, largest_box, load_cascade

logger = logging.getLogger(__name__)

DETECT_LONG_SIDE_PX = 640  # detection runs on a downscaled copy; boxes scale back

# Proportions relative to the Haar face box (x, y, w, h), measured on frontal portraits.
EYE_Y = 0.38
EYE_X_OFFSET = 0.19  # eye centres at 0.5 -/+ this
EYE_WIDTH = 0.24
EYE_OPEN_HEIGHT = 0.32  # opening height / eye width
MOUTH_Y = 0.85
MOUTH_WIDTH = 0.48
CHIN_Y = 1.13


@dataclass(frozen=True, slots=True)
class EyeGeometry:
    center_x: float
    center_y: float
    width: float
    height: float  # lid-to-lid opening


@dataclass(frozen=True, slots=True)
class FaceGeometry:
    face_box: tuple[int, int, int, int]  # x, y, w, h
    mouth_x: float  # horizontal centre of the mouth
    lip_line_y: float  # where the mouth parts (at its centre): everything below drops with the jaw
    lip_curve: float  # how far the lip line rises at the mouth corners (px; a smile is positive)
    mouth_width: float
    chin_y: float
    left_eye: EyeGeometry  # left in the image
    right_eye: EyeGeometry
    teeth_visible: bool  # the photo already shows upper teeth above the lip line
    detected: bool  # False when the face cascade failed and proportions of the frame were used
    # With teeth_visible: where the visible upper teeth begin (the upper lip's lower edge), so
    # lips that close (m, b, p) can cover them. 0.0 when no teeth show.
    teeth_top_y: float = 0.0


def detect_face_geometry(rgb: np.ndarray) -> FaceGeometry:
    """Face box and feature positions of the largest frontal face in ``rgb``."""
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_LONG_SIDE_PX / max(h, w))
    small = cv2.resize(rgb, (round(w * scale), round(h * scale))) if scale < 1.0 else rgb
    gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))

    box = largest_box(load_cascade(FRONTAL_FACE).detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40)
    ))
    if box is None:
        logger.warning(
            "No frontal face found in the %dx%d avatar; placing the mouth and eyes by the frame's "
            "proportions (use a frontal, well-lit portrait for a better animation)", w, h,
        )
        side = 0.42 * min(h, w)
        fx, fy = (w - side) / 2.0, 0.42 * h - side / 2.0
        face = (int(fx), int(fy), int(side), int(side))
        return _from_proportions(face, detected=False)

    fx, fy, fw, fh = (int(round(v / scale)) for v in box)
    face = (fx, fy, fw, fh)
    full_gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    left_eye, right_eye = _find_eyes(gray, box, scale, full_gray, face)
    mouth_x, lip_line_y, lip_curve, mouth_width, teeth, teeth_top = _find_mouth(gray, box, scale, rgb, face)
    return FaceGeometry(
        face_box=face,
        mouth_x=mouth_x,
        lip_line_y=lip_line_y,
        lip_curve=lip_curve,
        mouth_width=mouth_width,
        chin_y=min(h - 1.0, fy + CHIN_Y * fh),
        left_eye=left_eye,
        right_eye=right_eye,
        teeth_visible=teeth,
        detected=True,
        teeth_top_y=teeth_top,
    )


def _from_proportions(face: tuple[int, int, int, int], detected: bool) -> FaceGeometry:
    fx, fy, fw, fh = face
    eye_w = EYE_WIDTH * fw
    eyes = [
        EyeGeometry(fx + (0.5 + sign * EYE_X_OFFSET) * fw, fy + EYE_Y * fh, eye_w,
                    EYE_OPEN_HEIGHT * eye_w)
        for sign in (-1, 1)
    ]
    return FaceGeometry(
        face_box=face,
        mouth_x=fx + 0.5 * fw,
        lip_line_y=fy + MOUTH_Y * fh,
        lip_curve=0.0,
        mouth_width=MOUTH_WIDTH * fw,
        chin_y=fy + CHIN_Y * fh,
        left_eye=eyes[0],
        right_eye=eyes[1],
        teeth_visible=False,
        detected=detected,
    )


def _find_eyes(
    gray: np.ndarray,
    box: tuple[int, int, int, int],
    scale: float,
    full_gray: np.ndarray,
    face: tuple[int, int, int, int],
) -> tuple[EyeGeometry, EyeGeometry]:
    bx, by, bw, bh = box
    fallback = _from_proportions(face, detected=True)
    # Eyes live in the upper half of the face box; searching only there avoids nostril hits.
    found = load_cascade("haarcascade_eye.xml").detectMultiScale(
        gray[by : by + bh // 2 + bh // 10, bx : bx + bw], scaleFactor=1.1, minNeighbors=5,
        minSize=(max(8, bw // 10), max(8, bw // 10)),
    )
    boxes = sorted((b for b in found), key=lambda b: int(b[2]) * int(b[3]), reverse=True)[:2]
    eyes: dict[str, EyeGeometry] = {}
    for ex, ey, ew, eh in boxes:
        x0, y0 = (bx + ex) / scale, (by + ey) / scale
        size = ew / scale
        eye = _refine_eye(full_gray, x0, y0, size)
        side = "left" if eye.center_x < face[0] + face[2] / 2 else "right"
        eyes.setdefault(side, eye)
    if len(eyes) < 2:
        logger.warning("Found %d of 2 eyes; using face proportions for the rest", len(eyes))
    return eyes.get("left", fallback.left_eye), eyes.get("right", fallback.right_eye)


def _refine_eye(full_gray: np.ndarray, x0: float, y0: float, size: float) -> EyeGeometry:
    """The iris is the darkest blob in the middle band of the cascade's (brow-including) box."""
    x0i, y0i, s = int(x0), int(y0), max(4, int(size))
    patch = full_gray[y0i : y0i + s, x0i : x0i + s].astype(np.float32)
    center_x, center_y = x0 + 0.5 * size, y0 + 0.6 * size
    if patch.size:
        blurred = cv2.GaussianBlur(patch, (0, 0), max(1.0, s / 12))
        band = blurred[int(0.35 * s) : int(0.85 * s), int(0.2 * s) : int(0.8 * s)]
        if band.size:
            iy, ix = np.unravel_index(int(np.argmin(band)), band.shape)
            # Blend with the box centre: a shadow or eyeliner may pull the minimum sideways.
            center_x = 0.5 * center_x + 0.5 * (x0i + int(0.2 * s) + ix)
            center_y = y0i + int(0.35 * s) + iy
    width = 0.9 * size
    return EyeGeometry(float(center_x), float(center_y), float(width), float(EYE_OPEN_HEIGHT * width))


def _find_mouth(
    gray: np.ndarray,
    box: tuple[int, int, int, int],
    scale: float,
    rgb: np.ndarray,
    face: tuple[int, int, int, int],
) -> tuple[float, float, float, float, bool, float]:
    bx, by, bw, bh = box
    fx, fy, fw, fh = face
    top = by + bh // 2
    found = load_cascade("haarcascade_smile.xml").detectMultiScale(
        gray[top : by + bh + bh // 6, bx : bx + bw], scaleFactor=1.1, minNeighbors=15,
        minSize=(max(10, bw // 5), max(6, bw // 10)),
    )
    mouth = largest_box(found)
    if mouth is None:
        logger.warning("No mouth found by the smile cascade; placing it by face proportions")
        mx, my0, mw, mh = fx + 0.5 * fw, fy + 0.72 * fh, MOUTH_WIDTH * fw, 0.26 * fh
    else:
        sx, sy, sw, sh = (v / scale for v in mouth)
        # The smile box runs past the lip corners on both sides.
        mx, my0, mw, mh = bx / scale + sx + sw / 2, top / scale + sy, 0.8 * sw, sh
    lip_y, teeth, teeth_top = _lip_line(rgb, mx, my0, mw, mh)
    curve = _lip_curve(rgb, mx, lip_y, mw, mh)
    return float(mx), lip_y, curve, float(mw), teeth, teeth_top


def _lip_line(rgb: np.ndarray, mx: float, y0: float, mw: float, mh: float) -> tuple[float, bool, float]:
    """Row where the lips part, from the mean colour of the mouth box's central columns, whether
    teeth show, and where they begin (0.0 if they do not).

    Teeth are bright and unsaturated; if a band of them shows, the jaw line is the lower edge of
    that band (upper teeth stay with the skull). Otherwise it is the darkest row (the lip seam).
    """
    x0, x1 = int(mx - 0.2 * mw), int(mx + 0.2 * mw)
    ya, yb = int(y0 + 0.3 * mh), int(y0 + mh)
    strip = rgb[ya:yb, x0:x1]
    if strip.shape[0] < 3 or strip.shape[1] < 2:
        return y0 + 0.6 * mh, False, 0.0
    hsv = cv2.cvtColor(np.ascontiguousarray(strip), cv2.COLOR_RGB2HSV).astype(np.float32)
    sat, val = hsv[..., 1].mean(axis=1), hsv[..., 2].mean(axis=1)
    teeth_rows = (val > np.median(val) + 8) & (sat < 0.75 * np.median(sat))
    if teeth_rows.sum() >= 2:
        rows = np.flatnonzero(teeth_rows)
        return float(ya + rows[-1] + 1), True, float(ya + rows[0])
    return float(ya + int(np.argmin(val)) + 0.5), False, 0.0


def _lip_curve(rgb: np.ndarray, mx: float, lip_y: float, mw: float, mh: float) -> float:
    """Rise of the lip line at the corners: mouth corners are the darkest spots beside the lips.

    Measured in a column band at 80 % of the half-width on each side (the corner proper is often
    in shadow); the animation bends the lip line as curve * (dx / half_width)^2.
    """
    hw = 0.5 * mw
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    ya, yb = int(lip_y - 0.45 * mh), int(lip_y + 0.2 * mh) + 1
    band_w = max(2, int(mw / 12))
    if ya < 0 or yb > gray.shape[0]:
        return 0.0
    rises = []
    for frac in (-0.8, 0.8):
        x0 = int(mx + frac * hw - band_w / 2)
        if x0 < 0 or x0 + band_w > gray.shape[1]:
            continue
        col = cv2.GaussianBlur(gray[ya:yb, x0 : x0 + band_w], (1, 3), 0).mean(axis=1)
        rises.append(lip_y - (ya + int(np.argmin(col)) + 0.5))
    if len(rises) < 2:
        return 0.0
    return float(np.clip(np.mean(rises), -0.05 * mw, 0.25 * mw))
