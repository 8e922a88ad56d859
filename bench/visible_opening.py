"""How open does the mouth *look*? The visible opening between the lips, measured on pixels.

``FaceAnimator.mouth_geometry`` says how far the renderer moved the lips; a photo that already
shows its teeth (the astronaut smiles with parted lips) can be "closed" by that measure and
still show its teeth on screen. This reads the rendered frame instead: in the middle of the
mouth (the central 80 % of its width), per column, the run of
pixels that are not lip or skin, i.e. dark inner mouth or bright, unsaturated teeth, that
touches the lip line (across gaps of 12 % of the mouth's width), counted. The opening is the run height of the upper quartile of those columns
(teeth that show over a third of the mouth count; one stray highlight does not).

Lip and skin are the frame's own: the median value and saturation of a box around the mouth,
mostly skin and lips at any opening the renderer draws.
"""

from __future__ import annotations

import cv2
import numpy as np

from services.avatar.face_geometry import FaceGeometry

JAW_REACH = 0.24  # the renderer's jaw drop per mouth width at openness 1 (animation.py)


def opening_mask(frame: np.ndarray, g: FaceGeometry) -> tuple[np.ndarray, int, int]:
    """(mask of inner-mouth or teeth pixels, its top row, its left column) around the mouth."""
    h, w = frame.shape[:2]
    mw = g.mouth_width
    x0, x1 = int(max(0, g.mouth_x - 0.3 * mw)), int(min(w, g.mouth_x + 0.3 * mw + 1))
    y0 = int(max(0, g.lip_line_y - g.lip_curve - 0.3 * mw))
    y1 = int(min(h, g.lip_line_y + (JAW_REACH + 0.3) * mw))
    bx0, bx1 = int(max(0, g.mouth_x - 0.7 * mw)), int(min(w, g.mouth_x + 0.7 * mw + 1))
    box = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, bx0:bx1]), cv2.COLOR_RGB2HSV).astype(np.float32)
    med_s, med_v = float(np.median(box[..., 1])), float(np.median(box[..., 2]))
    hsv = box[:, x0 - bx0 : x1 - bx0]
    s, v = hsv[..., 1], hsv[..., 2]
    dark = v < 0.65 * med_v
    if med_s < 20:  # a grey photo: teeth only by brightness, well above the skin's
        teeth = v > med_v + 35
    else:
        teeth = (v > med_v + 15) & (s < 0.6 * med_s + 12)
    return dark | teeth, y0, x0


def visible_opening(frame: np.ndarray, g: FaceGeometry) -> float:
    """Upper-quartile height in pixels of the visible opening over the mouth's central columns."""
    mask, y0, x0 = opening_mask(frame, g)
    n_rows, n_cols = mask.shape
    gap = max(2, int(0.12 * g.mouth_width))
    heights = []
    for c in range(n_cols):
        dx = x0 + c - g.mouth_x
        line = g.lip_line_y - g.lip_curve * min(1.0, (dx / (0.5 * g.mouth_width)) ** 2) - y0
        seeds = [r for r in range(int(line) - 3, int(line) + 3) if 0 <= r < n_rows and mask[r, c]]
        if not seeds:
            heights.append(0)
            continue
        first = last = seeds[0]
        # Across a short gap too: painted teeth and the cavity below them have a shaded rim
        # between them that is neither dark nor bright.
        while True:
            up = [r for r in range(first - gap, first) if r >= 0 and mask[r, c]]
            if not up:
                break
            first = up[0]
        while True:
            down = [r for r in range(last + gap, last, -1) if r < n_rows and mask[r, c]]
            if not down:
                break
            last = down[0]
        heights.append(int(mask[first : last + 1, c].sum()))
    return float(np.percentile(heights, 75)) if heights else 0.0
