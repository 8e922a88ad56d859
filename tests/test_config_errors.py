"""A service that stops on a configuration error exits 78 (parked in containers); a crash exits 1
(restarted). The statuses scripts/docker-entrypoint.sh tells apart."""

from __future__ import annotations

import pytest

from services.config_errors import EX_CONFIG, ConfigurationError
from services.endpoints import Endpoints
from services.llm.engine import LlmModelMissing
from services.runner import run_service
from services.settings_util import SettingsError
from services.tts.coqui_engine import TtsVoiceError
from services.tts.engine import TtsModelMissing


def _failing(exc: Exception):
    async def main(transport, ready) -> None:  # noqa: ANN001 (the ServiceMain signature)
        raise exc

    return main


@pytest.mark.parametrize("exc", [
    LlmModelMissing("/models/llm/Qwen2.5-7B-Instruct is missing; run python main.py fetch"),
    TtsModelMissing("coqui-xtts model folder /models/tts/xtts does not exist"),
    TtsVoiceError("speaker p999 is not one of p225, p226"),
    SettingsError("AVATAR_LLM_MAX_NEW_TOKENS=0 is outside 1..4096"),
], ids=lambda e: type(e).__name__)
def test_missing_model_or_bad_setting_exits_ex_config(tmp_path, monkeypatch, caplog, exc) -> None:
    monkeypatch.setenv("AVATAR_RUN_DIR", str(tmp_path))
    assert isinstance(exc, ConfigurationError)
    assert run_service("llm", _failing(exc), Endpoints.in_dir(str(tmp_path))) == EX_CONFIG == 78
    assert str(exc) in caplog.text, "the reason is the last thing the service says"


def test_a_crash_still_exits_1(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AVATAR_RUN_DIR", str(tmp_path))
    assert run_service("llm", _failing(RuntimeError("CUDA error: an illegal memory access")),
                       Endpoints.in_dir(str(tmp_path))) == 1
