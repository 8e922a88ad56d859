"""``--llm-model`` with a local GGUF file or Hugging Face folder (issue 27): the packaged
SmolLM2 GGUF stands in for a file of your own, loaded through the same path as any other."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.llm.engine import LlmModelMissing
from services.llm.settings import LlmSettings, llm_overrides
from services.llm.transformers_engine import TransformersEngine, smollm2_gguf_path




def _answer(engine: TransformersEngine, question: str) -> str:
    chat = [{"role": "user", "content": question}]
    return "".join(engine.stream(chat, lambda: False, max_new_tokens=16))


@pytest.mark.slow
def test_a_gguf_file_and_then_its_folder(tmp_path: Path) -> None:
    gguf = tmp_path / "models" / "my-model.gguf"
    gguf.parent.mkdir()
    gguf.symlink_to(smollm2_gguf_path())
    settings = dataclasses.replace(
        LlmSettings.from_env(llm_overrides(None, str(gguf))), cache_dir=str(tmp_path / "cache"), pace_tokens_per_s=0.0
    )
    assert settings.engine == "transformers" and settings.model == str(gguf)
    engine = TransformersEngine.from_settings(settings)
    try:
        assert engine.model_name == "my-model.gguf"
        assert "Paris" in _answer(engine, "What is the capital of France?")
    finally:
        engine.close()
    # Converted once into the cache, keyed by the file: that folder is an HF folder to load.
    [folder] = (tmp_path / "cache" / "gguf-hf" / "my-model").iterdir()
    assert (folder / "config.json").is_file()
    engine = TransformersEngine.from_settings(dataclasses.replace(settings, model=str(folder)))
    try:
        assert engine.model_name == folder.name
        assert "Paris" in _answer(engine, "What is the capital of France?")
    finally:
        engine.close()


def test_a_missing_gguf_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    settings = LlmSettings.from_env(llm_overrides(None, str(missing)))
    with pytest.raises(LlmModelMissing, match="nope.gguf not found"):
        TransformersEngine.from_settings(settings)


def test_main_flags_reach_the_llm_settings() -> None:
    import main

    args = main.build_parser().parse_args(["--llm-url", "http://127.0.0.1:11434/v1", "--llm-model", "llama3.2"])
    env = {main._OPTION_ENV[k]: str(v) for k, v in vars(args).items() if k in main._OPTION_ENV and v is not None}
    settings = LlmSettings.from_env(env)
    assert (settings.engine, settings.openai_base_url, settings.model) == ("openai", "http://127.0.0.1:11434/v1", "llama3.2")
    assert not settings.few_shot  # the examples are for the packaged model
    assert LlmSettings.from_env({}).few_shot and LlmSettings.from_env({}).engine == "transformers"
    # An explicit engine wins over the URL's default.
    assert LlmSettings.from_env({"AVATAR_LLM_URL": "http://x/v1", "AVATAR_LLM_ENGINE": "transformers"}).engine == "transformers"
