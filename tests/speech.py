"""Synthesized test speech (Piper, the embedded voice), cached per test session."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def piper_speech(text: str) -> np.ndarray:
    from services.tts.engine import voice_pcm
    from services.tts.piper_engine import PiperEngine
    from services.tts.settings import TtsSettings

    # Without VITS's sampling noise: the same text is the same audio in every run, so a test
    # that recognises it cannot flake on an unlucky draw (CI once heard "France" as "friends").
    engine = PiperEngine.from_settings(TtsSettings(), noise=False)
    return np.concatenate([voice_pcm(chunk) for chunk in engine.synthesize(text)])


def mouth_box_of_default_avatar() -> tuple[float, float, float, float]:
    """The default avatar's mouth and jaw region as fractions (x, y, w, h) of the frame."""
    from services.avatar import load_avatar
    from services.avatar.face_geometry import detect_face_geometry

    image = load_avatar("")[0]
    h, w = image.shape[:2]
    g = detect_face_geometry(image)
    x0 = g.mouth_x - 0.7 * g.mouth_width
    y0 = g.lip_line_y - 0.35 * g.mouth_width
    y1 = g.chin_y + 0.1 * g.mouth_width
    return (x0 / w, y0 / h, 1.4 * g.mouth_width / w, (y1 - y0) / h)
