"""Build the configured ASR engine (lazy imports: only the chosen engine is loaded)."""

from __future__ import annotations

from services.asr.engine import AsrEngine
from services.asr.settings import AsrSettings


def build_engine(settings: AsrSettings) -> AsrEngine:
    if settings.engine == "vosk":
        from services.asr.vosk_engine import VoskEngine

        return VoskEngine.from_settings(settings)
    if settings.engine == "pocketsphinx":
        from services.asr.pocketsphinx_engine import PocketsphinxEngine

        return PocketsphinxEngine.from_settings(settings)
    from services.asr.whisper_engine import WhisperEngine

    return WhisperEngine.from_settings(settings)
