"""Lips that meet over the opening a photo shows (a smile with parted lips and teeth).

Found once at preparation: per column of the mouth, corner to corner, the run of pixels between
the lips that is not lip or skin: bright, unsaturated teeth or the dark inner mouth, touching the
lip line. At render time the upper lip is stretched down and the lower lip up over that run by a
backward warp (as the lids close over the eyes), so the photo's own lip colour and texture
cover it:

* closed (m, b, p): both lips reach the middle of the opening, ``seal`` of the way; what is left
  between them is the photo's opening squeezed, so the lips close smoothly with ``seal``;
* lip-teeth (f, v): the upper lip stays, the lower lip rises a third of the way, under the upper
  teeth the photo shows.

A soft seam darkens where the lips meet, so closed lips read as two lips and not as skin.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from services.avatar.face_geometry import FaceGeometry

TUCK_LIFT = 0.35  # of the opening the lower lip covers on f/v
SEAM_DARKEN = 0.22


@dataclass(frozen=True, slots=True)
class LipSeal:
    x0: int  # first column of the mouth
    top: np.ndarray  # per column: first row of the opening (float32)
    bottom: np.ndarray  # per column: one past its last row (top where nothing shows)
    upper_skin: float  # how much upper lip stretches down
    lower_skin: float

    @classmethod
    def from_photo(cls, image: np.ndarray, g: FaceGeometry) -> "LipSeal | None":
        """The photo's visible opening, or None when it shows none (closed lips at rest)."""
        h, w = image.shape[:2]
        hw = 0.5 * g.mouth_width
        reach = max(3.0, 0.2 * g.mouth_width)
        x0, x1 = int(max(0, g.mouth_x - hw)), int(min(w, g.mouth_x + hw + 1))
        y0 = int(max(0, g.lip_line_y - g.lip_curve - reach))
        y1 = int(min(h, g.lip_line_y + reach))
        if x1 - x0 < 3 or y1 - y0 < 3:
            return None
        # The lips and skin around the mouth set what "bright and grey" and "dark" mean here.
        bx0, bx1 = int(max(0, g.mouth_x - 1.4 * hw)), int(min(w, g.mouth_x + 1.4 * hw + 1))
        box = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, bx0:bx1]), cv2.COLOR_RGB2HSV).astype(np.float32)
        med_s, med_v = float(np.median(box[..., 1])), float(np.median(box[..., 2]))
        hsv = box[:, x0 - bx0 : x1 - bx0]
        s, v = hsv[..., 1], hsv[..., 2]
        teeth = (v > med_v + 8) & (s < 0.75 * med_s) if med_s >= 20 else v > med_v + 35
        mask = teeth | (v < 0.55 * med_v)
        n_rows, n_cols = mask.shape
        dx = np.arange(x0, x1, dtype=np.float32) - g.mouth_x
        line = np.round(g.lip_line_y - g.lip_curve * np.clip((dx / hw) ** 2, 0.0, 1.0)).astype(int) - y0
        top = np.empty(n_cols, np.float32)
        bottom = np.empty(n_cols, np.float32)
        for c in range(n_cols):
            rows = [r for r in range(line[c] - 3, line[c] + 2) if 0 <= r < n_rows and mask[r, c]]
            if not rows:
                top[c] = bottom[c] = y0 + line[c]
                continue
            first = last = rows[0]
            while first > 0 and mask[first - 1, c]:
                first -= 1
            while last + 1 < n_rows and mask[last + 1, c]:
                last += 1
            # One row more each side: the lips' edges are half tooth, half lip.
            top[c], bottom[c] = y0 + first - 1, y0 + last + 2
        if (bottom - top > 2).sum() < 3:
            return None
        if n_cols >= 5:  # one stray highlight must not tear the lip
            top = cv2.medianBlur(top[None, :], 5)[0]
            bottom = cv2.medianBlur(bottom[None, :], 5)[0]
        # Towards the corners the teeth are in shade and fail the test above; the opening there
        # follows the middle's (measured over its central third) tapering as a lens to the corners.
        middle = np.abs(dx) < hw / 3
        above = float(np.median((y0 + line - top)[middle]))
        below = float(np.median((bottom - y0 - line)[middle]))
        lens = np.sqrt(np.clip(1.0 - (dx / hw) ** 2, 0.0, 1.0))
        top = np.minimum(top, y0 + line - above * lens)
        bottom = np.maximum(bottom, y0 + line + below * lens)
        skin = max(3.0, 0.1 * g.mouth_width)
        return cls(x0, top.astype(np.float32), np.maximum(bottom, top).astype(np.float32), skin, 1.2 * skin)

    def displace(
        self, map_y: np.ndarray, upper: float, lower: float, shift: tuple[float, float]
    ) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """Move the upper lip down ``upper`` and the lower lip up ``lower`` of the opening (each
        0..0.5 for lips that meet in the middle); return the seam shading for after the remap."""
        h, w = map_y.shape
        x1 = self.x0 + len(self.top)
        y0 = int(max(0, float(self.top.min()) - self.upper_skin - 3))
        y1 = int(min(h, float(self.bottom.max()) + self.lower_skin + 3))
        if y1 <= y0:
            return None
        ys, xs = np.mgrid[y0:y1, self.x0 : x1].astype(np.float32)
        xs += shift[0]
        ys += shift[1]
        columns = np.clip(np.round(xs[0] - self.x0).astype(int), 0, len(self.top) - 1)
        top, bottom = self.top[columns][None, :], self.bottom[columns][None, :]
        span = bottom - top
        up_edge, low_edge = top + upper * span, bottom - lower * span
        band_top, band_bottom = top - self.upper_skin, bottom + self.lower_skin
        # Upper lip [band_top, top) -> [band_top, up_edge); opening [top, bottom) -> [up_edge,
        # low_edge); lower lip [bottom, band_bottom) -> [low_edge, band_bottom).
        src = np.where(
            ys < up_edge,
            band_top + (ys - band_top) * (top - band_top) / np.maximum(up_edge - band_top, 1e-3),
            np.where(
                ys < low_edge,
                top + (ys - up_edge) * span / np.maximum(low_edge - up_edge, 1e-3),
                band_bottom - (band_bottom - ys) * (band_bottom - bottom) / np.maximum(band_bottom - low_edge, 1e-3),
            ),
        )
        inside = (ys >= band_top) & (ys < band_bottom) & (span > 0)
        map_y[y0:y1, self.x0 : x1] -= np.where(inside, ys - src, 0.0).astype(np.float32)
        closing = min(1.0, upper + lower)
        if closing < 0.05:
            return None
        meet = 0.5 * (up_edge + low_edge)
        shade = 1.0 - SEAM_DARKEN * closing * (span > 0) * np.exp(-(((ys - meet) / 1.0) ** 2))
        return (slice(y0, y1), slice(self.x0, x1)), shade.astype(np.float32)
