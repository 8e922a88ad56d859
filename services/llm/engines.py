"""Build the configured LLM engine (lazy imports: only the chosen engine is loaded)."""

from __future__ import annotations

from services.llm.engine import LlmEngine
from services.llm.settings import LlmSettings


def build_engine(settings: LlmSettings) -> LlmEngine:
    if settings.engine == "openai":
        from services.llm.openai_engine import OpenAiEngine

        return OpenAiEngine.from_settings(settings)
    from services.llm.transformers_engine import TransformersEngine

    return TransformersEngine.from_settings(settings)
