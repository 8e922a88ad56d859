"""Animate one photo without neural weights: a mouth shaped per viseme, blinks, breathing, sway.

Everything is one backward warp (``cv2.remap``) of the photo plus a painted mouth cavity, drawn
for a ``MouthShape`` (services/avatar/visemes.py: opening, width, teeth, lip tuck), or for a bare
openness when the voice came without phoneme timing (then loudness drives it, ``MouthEnvelope``):

* jaw: below the lip line the lower lip, chin and lower cheeks move down by ``open * gain``;
  in the middle of the mouth the displacement jumps at the lip line (the lips part), towards the
  corners it ramps up over a growing height (cheeks stretch), and below the chin it fades out so
  the chin slides over the neck. The gap that opens is covered with a shaded, feathered cavity.
* width: the lip corners move in (rounded: o, u, w) or out (spread: i) by a horizontal warp that
  is strongest at the corners; the cavity narrows with them, and rounds.
* teeth: upper teeth hang from the upper lip into the opening (s, t, i), lower teeth rise from
  the lower lip; on f and v the opening is all upper teeth resting on the lower lip.
* seal: on m, b and p a photo that shows its teeth (or a parted-lip opening) has both lips
  stretched over it until they meet (services/avatar/lip_seal.py); on f and v its lower lip
  rises under the upper teeth it shows.
* blink: the band of lid skin above each eye is stretched down over the eye to a lid edge that
  follows the eye's lower arc, so the lash line itself moves (no painted bar).
* idle life: the head region sways by a sum of slow incommensurate sines (about 1 px) and the body
  rises and falls with breath, both sub-pixel through the same remap, so the idle face is never a
  frozen picture.

All fields are precomputed in ``__init__``; ``render`` costs two map updates, a remap and two
small region blends (about 1-2 ms at 512x512 here, see bench/bench_animation.py).
"""

from __future__ import annotations

import copy
import logging
import math

import cv2
import numpy as np

from services.avatar.face_geometry import EyeGeometry, FaceGeometry, detect_face_geometry
from services.avatar.lip_seal import TUCK_LIFT, LipSeal
from services.avatar.visemes import MouthShape
from services.media import SAMPLES_PER_VIDEO_FRAME, rms_dbfs

logger = logging.getLogger(__name__)

JAW_DROP_PER_MOUTH_WIDTH = 0.24  # lower-lip drop at openness 1 (0.2-0.25 looked right in a prototype)
MOUTH_NARROWING = 0.14  # corners move in a little as the jaw opens
WIDTH_GAIN = 0.75  # corner warp per unit of MouthShape.width (-1 rounded: corners ~30 % in)
BLINK_S = 0.15
BLINK_CLOSE_FRACTION = 0.4  # closing is faster than opening
BLINK_INTERVAL_S = (3.0, 6.0)
FIRST_BLINK_S = 1.2
SWAY_PX = 1.0
BREATH_PX = 0.8
BREATH_PERIOD_S = 4.6

CAVITY_DARK = np.array([22.0, 11.0, 12.0], np.float32)
CAVITY_RIM = np.array([112.0, 56.0, 56.0], np.float32)
TEETH = np.array([214.0, 206.0, 194.0], np.float32)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class FaceAnimator:
    """Renders one RGB photo with a given mouth openness (0..1) at a given time."""

    def __init__(self, image: np.ndarray, geometry: FaceGeometry | None = None, seed: int = 7):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"FaceAnimator needs an RGB uint8 image, got {image.dtype} {image.shape}")
        self._image = np.ascontiguousarray(image)
        self.geometry = geometry if geometry is not None else detect_face_geometry(image)
        g = self.geometry
        h, w = image.shape[:2]
        fx, fy, fw, fh = g.face_box
        self._jaw_drop_px = JAW_DROP_PER_MOUTH_WIDTH * g.mouth_width

        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        self._base_x, self._base_y = xs, ys
        # Head sway weight: 1 over the head, fading out so the frame's edges never move.
        cx, cy = fx + 0.5 * fw, fy + 0.55 * fh
        d = np.sqrt(((xs - cx) / (0.85 * fw)) ** 2 + ((ys - cy) / (1.0 * fh)) ** 2)
        self._head = (1.0 - _smoothstep(1.0, 2.2, d)).astype(np.float32)
        # Breathing: the chest and shoulders rise most, the head a little with them.
        chest = _smoothstep(g.chin_y, g.chin_y + 1.5 * fh, ys)
        self._body = np.maximum(0.35 * self._head, chest).astype(np.float32)

        self._jaw_roi, self._jaw_field, self._narrow_field = self._jaw_fields(h, w)
        self._cavity = _cavity_colours(image, g)
        self._seal = LipSeal.from_photo(image, g) if g.teeth_visible else None
        self._eyes = (g.left_eye, g.right_eye)
        rng = np.random.default_rng(seed)
        intervals = rng.uniform(*BLINK_INTERVAL_S, size=64)
        self.blink_starts_s = tuple(float(v) for v in FIRST_BLINK_S + np.concatenate(
            ([0.0], np.cumsum(intervals[:-1]))
        ))
        self._blink_period_s = self.blink_starts_s[-1] + float(intervals[-1])

    @property
    def frame_size(self) -> tuple[int, int]:
        return self._image.shape[0], self._image.shape[1]

    def with_image(self, image: np.ndarray) -> "FaceAnimator":
        """The same geometry and fields on another picture of the same size (a video loop frame)."""
        if image.shape != self._image.shape:
            raise ValueError(f"loop frame {image.shape} differs from {self._image.shape}")
        clone = copy.copy(self)  # shares the read-only fields; render() mutates nothing
        clone._image = np.ascontiguousarray(image)
        return clone

    # --- time ------------------------------------------------------------------------------

    def blink_closure(self, t_s: float) -> float:
        """0 = eyes open, 1 = lids fully closed."""
        t = t_s % self._blink_period_s
        i = int(np.searchsorted(self.blink_starts_s, t, side="right")) - 1
        if i < 0:
            return 0.0
        phase = (t - self.blink_starts_s[i]) / BLINK_S
        if phase >= 1.0:
            return 0.0
        if phase < BLINK_CLOSE_FRACTION:
            p = phase / BLINK_CLOSE_FRACTION
        else:
            p = 1.0 - (phase - BLINK_CLOSE_FRACTION) / (1.0 - BLINK_CLOSE_FRACTION)
        return p * p * (3.0 - 2.0 * p)

    @staticmethod
    def _motion(t_s: float) -> tuple[float, float, float]:
        """(sway x, sway y, breath) in pixels; incommensurate periods so it never visibly loops."""
        tau = 2.0 * math.pi * t_s
        sx = SWAY_PX * (0.65 * math.sin(tau * 0.13) + 0.35 * math.sin(tau * 0.31 + 1.3))
        sy = SWAY_PX * (0.4 * math.sin(tau * 0.17 + 0.7) + 0.2 * math.sin(tau * 0.41))
        breath = BREATH_PX * math.sin(tau / BREATH_PERIOD_S)
        return sx, sy, breath

    # --- precomputation --------------------------------------------------------------------

    def _jaw_fields(self, h: int, w: int) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        """Drop weight (0..1) and corner-narrowing field over the region the jaw can move."""
        g = self.geometry
        fw, fh = g.face_box[2], g.face_box[3]
        hw = 0.5 * g.mouth_width
        x0, x1 = int(max(0, g.mouth_x - 0.75 * fw)), int(min(w, g.mouth_x + 0.75 * fw + 1))
        y0 = int(max(0, g.lip_line_y - 1.2 * hw - 2))
        y1 = int(min(h, g.chin_y + 0.45 * fh + 2))
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx = xs - g.mouth_x
        lateral = 1.0 - _smoothstep(0.3 * fw, 0.62 * fw, np.abs(dx))
        # Height over which the displacement ramps up above the lip line: a one-pixel cut
        # (the lips part) in the middle, a cheek-stretching ramp beyond the corners.
        # Spread over most of the mouth so the shear towards the corners stays gentle.
        ramp = 1.0 + (1.2 * hw - 1.0) * _smoothstep(0.25 * hw, 1.3 * hw, np.abs(dx))
        lip = self._lip_y(dx)
        above = _smoothstep(0.0, 1.0, (ys - (lip - ramp)) / ramp)
        below_chin = 1.0 - _smoothstep(g.chin_y, g.chin_y + 0.4 * fh, ys)
        vertical = np.where(ys < lip, above, below_chin)
        drop = (lateral * vertical).astype(np.float32)
        narrow = (
            dx * np.exp(-((dx / (1.2 * hw)) ** 2)) * np.exp(-(((ys - lip) / hw) ** 2))
        ).astype(np.float32)
        return (slice(y0, y1), slice(x0, x1)), drop, narrow

    def _lip_y(self, dx: np.ndarray) -> np.ndarray:
        """The lip line, bent up towards the corners by the measured smile curve."""
        g = self.geometry
        return g.lip_line_y - g.lip_curve * np.clip((dx / (0.5 * g.mouth_width)) ** 2, 0.0, 1.0)

    # --- rendering -------------------------------------------------------------------------

    def mouth_geometry(self, mouth: MouthShape | float) -> tuple[float, float]:
        """(lip opening at the centre, corner-to-corner width) in pixels as ``render`` draws them."""
        shape = self._drawn(_as_shape(mouth))
        return shape.open * self._jaw_drop_px, 2.0 * self._corner_half_width(_pucker(shape))

    def _drawn(self, shape: MouthShape) -> MouthShape:
        """On a photo that shows its teeth at rest, f/v need no jaw drop: its upper teeth already
        rest on the lower lip, which only rises under them (LipSeal)."""
        if self._seal is None or shape.tuck <= 0.0:
            return shape
        return MouthShape(shape.open * (1.0 - shape.tuck), shape.width, shape.teeth, shape.tuck, shape.seal)

    def _corner_half_width(self, pucker: float) -> float:
        """Where the corner lands: the output x whose warped source is the photo's corner.

        On the lip row the warp samples x + pucker * x * exp(-(x / 1.2 hw)^2); solved for the
        corner (x = hw at the source) by a few fixed-point steps (the map is monotonic there).
        """
        hw = 0.5 * self.geometry.mouth_width
        x = hw
        for _ in range(8):
            x = hw - pucker * x * math.exp(-((x / (1.2 * hw)) ** 2))
        return x

    def render(self, mouth: MouthShape | float, t_s: float) -> np.ndarray:
        """The photo with the mouth in ``mouth`` (a shape, or a bare openness 0..1) at ``t_s``."""
        shape = self._drawn(_as_shape(mouth))
        openness = shape.open
        pucker = _pucker(shape)
        sx, sy, breath = self._motion(t_s)
        map_x = cv2.scaleAdd(self._head, sx, self._base_x)
        map_y = cv2.scaleAdd(self._head, sy, self._base_y)
        map_y = cv2.scaleAdd(self._body, breath, map_y)

        mouth_shift = self._shift_at(self.geometry.mouth_x, self.geometry.lip_line_y, sx, sy, breath)
        if openness > 0.005 or abs(pucker) > 0.005:
            self._apply_jaw(map_x, map_y, openness, pucker, mouth_shift)
        seam = None
        if self._seal is not None and (shape.seal > 0.01 or shape.tuck > 0.01):
            upper = 0.5 * shape.seal
            lower = max(0.5 * shape.seal, TUCK_LIFT * shape.tuck)
            seam = self._seal.displace(map_y, upper, lower, mouth_shift)
        closure = self.blink_closure(t_s)
        lashes = []
        if closure > 0.01:
            for eye in self._eyes:
                shift = self._shift_at(eye.center_x, eye.center_y, sx, sy, breath)
                lashes.append(self._apply_lid(map_y, eye, closure, shift))

        out = cv2.remap(self._image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        for lash in lashes:
            if lash is not None:
                roi, shade = lash
                out[roi] = (out[roi] * shade[..., None] + 0.5).astype(np.uint8)
        if seam is not None:
            roi, shade = seam
            out[roi] = (out[roi] * shade[..., None] + 0.5).astype(np.uint8)
        if openness > 0.005:
            self._paint_cavity(out, shape, self._corner_half_width(pucker), mouth_shift)
        return out

    def _shift_at(self, x: float, y: float, sx: float, sy: float, breath: float) -> tuple[float, float]:
        """Content offset (source = output + shift) that sway and breath give at one point."""
        h, w = self._head.shape
        xi, yi = int(min(w - 1, max(0, x))), int(min(h - 1, max(0, y)))
        return sx * float(self._head[yi, xi]), sy * float(self._head[yi, xi]) + breath * float(
            self._body[yi, xi]
        )

    def _apply_jaw(
        self, map_x: np.ndarray, map_y: np.ndarray, openness: float, pucker: float,
        shift: tuple[float, float],
    ) -> None:
        # The fields are defined on the still photo; sample them where the swayed content is.
        roi_h, roi_w = self._jaw_field.shape
        m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        drop = cv2.warpAffine(self._jaw_field, m, (roi_w, roi_h), flags=flags,
                              borderMode=cv2.BORDER_REPLICATE)
        narrow = cv2.warpAffine(self._narrow_field, m, (roi_w, roi_h), flags=flags,
                                borderMode=cv2.BORDER_REPLICATE)
        map_y[self._jaw_roi] -= (openness * self._jaw_drop_px) * drop
        map_x[self._jaw_roi] += pucker * narrow

    def _apply_lid(
        self, map_y: np.ndarray, eye: EyeGeometry, closure: float, shift: tuple[float, float]
    ) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """Warp one eye's lid down; return the lash-line shading to apply after the remap."""
        h, w = map_y.shape
        upper, lower = 0.55 * eye.height, 0.45 * eye.height  # lid margins above/below centre
        # Lid skin stretched down over the eye; short enough to leave the brow where it is.
        skin = 0.8 * eye.height
        x0 = int(max(0, eye.center_x - 0.6 * eye.width))
        x1 = int(min(w, eye.center_x + 0.6 * eye.width + 1))
        y0 = int(max(0, eye.center_y - upper - skin - 2))
        y1 = int(min(h, eye.center_y + lower + 3))
        if x1 <= x0 or y1 <= y0:
            return None
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        xs += shift[0]
        ys += shift[1]
        u = (xs - eye.center_x) / (0.5 * eye.width)
        taper = np.clip(1.0 - u * u, 0.0, 1.0) ** 0.6
        top = eye.center_y - upper * taper
        bottom = eye.center_y + lower * taper
        band_top = eye.center_y - upper - skin
        edge = top + closure * (bottom - top)
        inside = (ys >= band_top) & (ys < edge)
        src = band_top + (ys - band_top) * (top - band_top) / np.maximum(edge - band_top, 1e-3)
        map_y[y0:y1, x0:x1] -= np.where(inside, ys - src, 0.0).astype(np.float32)
        # Lashes gather along the moving lid edge; a soft dark line keeps it reading as a lid.
        shade = 1.0 - 0.35 * closure * (taper > 0.05) * np.exp(-(((ys - edge + 0.5) / 0.9) ** 2))
        return (slice(y0, y1), slice(x0, x1)), shade.astype(np.float32)

    def _paint_cavity(
        self, out: np.ndarray, shape: MouthShape, corner: float, shift: tuple[float, float]
    ) -> None:
        g = self.geometry
        h, w = out.shape[:2]
        hw = 0.5 * g.mouth_width
        gap = shape.open * self._jaw_drop_px
        # The opening spans the corners where the warp put them (narrow and round, or wide).
        inner = 0.95 * corner
        x0, x1 = int(max(0, g.mouth_x - hw - shift[0] - 2)), int(min(w, g.mouth_x + hw - shift[0] + 3))
        y0 = int(max(0, g.lip_line_y - g.lip_curve - shift[1] - 2))
        y1 = int(min(h, g.lip_line_y - shift[1] + gap + 3))
        if x1 <= x0 or y1 <= y0:
            return
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx = xs + shift[0] - g.mouth_x
        dy = ys + shift[1] - self._lip_y(dx)
        lens = np.sqrt(np.clip(1.0 - (dx / inner) ** 2, 0.0, 1.0))
        roundness = float(np.clip(-shape.width, 0.0, 1.0))
        height = np.maximum(gap * lens ** (0.8 - 0.5 * roundness), 1e-3)
        # Feathered by about a pixel on every side; the corners fade in over the lens taper, and a
        # barely open mouth gets a faint shadow rather than a hard one-pixel line.
        alpha = (
            _smoothstep(0.0, 0.35, lens)
            * np.clip(dy + 0.5, 0.0, 1.0)
            * np.clip(height - dy + 0.5, 0.0, 1.0)
            * min(1.0, gap / 2.0)
        )
        v = np.clip(dy / height, 0.0, 1.0)
        # Darkest just under the upper teeth and in the middle; the tongue catches light lower down.
        radial = np.clip(np.sqrt((dx / hw) ** 2 + (1.6 * (v - 0.35)) ** 2), 0.0, 1.0)
        shade = np.maximum(radial**1.5, 0.55 * v**2)
        dark, rim = self._cavity
        colour = dark + (rim - dark) * shade[..., None]
        across = 1.0 - _smoothstep(0.5 * inner, 0.8 * inner, np.abs(dx))
        if not g.teeth_visible:
            # Upper teeth hang from the upper lip: a hint when relaxed, more on s/t/i, and on
            # f/v (tuck) they fill the opening down to the lower lip they rest on.
            depth = max(1.5, 0.09 * g.mouth_width) * (1.0 + 1.5 * shape.teeth) + shape.tuck * gap
            band = np.clip(1.0 - dy / depth, 0.0, 1.0) ** 0.5
            teeth = (0.75 + 0.2 * shape.teeth) * band * across * min(1.0, gap / 4.0)
            colour += (TEETH - colour) * teeth[..., None]
        if shape.teeth > 0.5 and gap > 3.0:
            # Lower teeth just inside the lower lip when the teeth are close together.
            lower = np.clip(1.0 - (height - dy) / (0.25 * gap), 0.0, 1.0) * (shape.teeth - 0.5) * 1.2
            colour += (TEETH * 0.9 - colour) * (lower * across)[..., None]
        patch = out[y0:y1, x0:x1].astype(np.float32)
        a = alpha[..., None]
        out[y0:y1, x0:x1] = (patch + (colour - patch) * a + 0.5).astype(np.uint8)


def _cavity_colours(image: np.ndarray, g: FaceGeometry) -> tuple[np.ndarray, np.ndarray]:
    """The inner mouth's dark and rim colours, as colourful as the lips around it: a grey
    photo gets a grey mouth, not a red one."""
    hw = max(2, int(0.5 * g.mouth_width))
    y, x = int(g.lip_line_y), int(g.mouth_x)
    patch = image[max(0, y - hw // 2) : y + hw // 2, max(0, x - hw) : x + hw]
    saturation = float(cv2.cvtColor(patch, cv2.COLOR_RGB2HSV)[..., 1].mean()) / 255.0 if patch.size else 1.0
    keep = min(1.0, saturation / 0.25)
    out = []
    for colour in (CAVITY_DARK, CAVITY_RIM):
        grey = np.float32(colour.mean())
        out.append((grey + (colour - grey) * keep).astype(np.float32))
    return out[0], out[1]


def _as_shape(mouth: MouthShape | float) -> MouthShape:
    if isinstance(mouth, MouthShape):
        return MouthShape(min(1.0, max(0.0, mouth.open)), min(1.0, max(-1.0, mouth.width)),
                          min(1.0, max(0.0, mouth.teeth)), min(1.0, max(0.0, mouth.tuck)),
                          min(1.0, max(0.0, mouth.seal)))
    return MouthShape(float(min(1.0, max(0.0, mouth))))


def _pucker(shape: MouthShape) -> float:
    """Horizontal corner warp: corners in as the jaw opens or the lips round, out when spread."""
    return shape.open * MOUTH_NARROWING - shape.width * WIDTH_GAIN


class MouthEnvelope:
    """Streaming 16 kHz int16 audio -> mouth openness (0..1) per 640-sample video frame.

    Loudness in dBFS is mapped linearly between a floor (closed) and a ceiling (fully open), then
    smoothed with a fast attack and a slower release, as a jaw moves: it snaps open on a syllable
    and falls back over a few frames. Partial frames are buffered across calls.
    """

    def __init__(
        self,
        floor_dbfs: float = -48.0,
        ceiling_dbfs: float = -16.0,
        attack: float = 0.75,
        release: float = 0.35,
    ):
        if not ceiling_dbfs > floor_dbfs:
            raise ValueError("ceiling_dbfs must be above floor_dbfs")
        self._floor, self._ceiling = floor_dbfs, ceiling_dbfs
        self._attack, self._release = attack, release
        self._level = 0.0
        self._pending = np.zeros(0, np.int16)

    def reset(self) -> None:
        self._level = 0.0
        self._pending = np.zeros(0, np.int16)

    def frame_openness(self, frame: np.ndarray) -> float:
        """Advance by one 640-sample frame and return its openness."""
        target = (rms_dbfs(frame) - self._floor) / (self._ceiling - self._floor)
        target = min(1.0, max(0.0, target))
        rate = self._attack if target > self._level else self._release
        self._level += rate * (target - self._level)
        if self._level < 0.01:
            self._level = 0.0  # let silence settle to a truly closed mouth
        return self._level

    def push(self, pcm: np.ndarray) -> list[float]:
        """Openness for every complete frame now buffered; the remainder waits for more audio."""
        data = np.concatenate((self._pending, np.asarray(pcm, np.int16)))
        n = len(data) // SAMPLES_PER_VIDEO_FRAME
        values = [
            self.frame_openness(data[i * SAMPLES_PER_VIDEO_FRAME : (i + 1) * SAMPLES_PER_VIDEO_FRAME])
            for i in range(n)
        ]
        self._pending = data[n * SAMPLES_PER_VIDEO_FRAME :].copy()
        return values

    def flush(self) -> list[float]:
        """Openness of the buffered partial frame, zero-padded to a whole frame (if any)."""
        if not len(self._pending):
            return []
        tail = np.zeros(SAMPLES_PER_VIDEO_FRAME, np.int16)
        tail[: len(self._pending)] = self._pending
        self._pending = np.zeros(0, np.int16)
        return [self.frame_openness(tail)]
