"""Build the configured TTS engine (lazy imports: only the chosen engine is loaded)."""

from __future__ import annotations

from services.tts.engine import TtsEngine
from services.tts.settings import TtsSettings


def build_engine(settings: TtsSettings) -> TtsEngine:
    if settings.engine == "coqui-vits":
        from services.tts.coqui_engine import CoquiVitsEngine

        return CoquiVitsEngine.from_settings(settings)
    if settings.engine == "coqui-xtts":
        from services.tts.coqui_engine import CoquiXttsEngine

        return CoquiXttsEngine.from_settings(settings)
    from services.tts.piper_engine import PiperEngine

    return PiperEngine.from_settings(settings)
