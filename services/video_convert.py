"""Picture format conversions shared by the gateway's video path."""

from __future__ import annotations

import cv2
import numpy as np


def rgb_to_i420(image: np.ndarray) -> np.ndarray:
    """RGB picture -> the planar YUV 4:2:0 the VP8 encoder takes, as one (h * 3/2, w) array.

    Handing the encoder an rgb24 frame makes it convert with swscale, about 2.5 ms a 512x512
    frame here; OpenCV's converter takes about 0.4 ms (same BT.601 matrix). At 25 fps for every
    session that difference is 5 % of a core per session.
    """
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420)
