"""Typed settings of the ASR service (VAD, endpointing, recogniser)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.settings_util import env_choice, env_float, env_int, env_str, models_dir, profile

ENGINES = ("pocketsphinx", "vosk")


@dataclass(frozen=True, slots=True)
class AsrSettings:
    engine: str = "pocketsphinx"
    # A Vosk model folder (the one holding am/, conf/, graph/); "" with engine=vosk is an error.
    vosk_model: str = ""
    # Trailing silence that ends an utterance. Short = snappy turn-taking, long = fewer cut-offs.
    # 280 ms by measurement (python -m bench.bench_endpointing): one VAD window above 250 ms,
    # the shortest that never cut an utterance with inner pauses of up to 250 ms in our runs.
    endpoint_silence_ms: int = 280
    # Speech probability above which a 32 ms VAD window counts as voiced.
    vad_threshold: float = 0.5
    # Voiced time needed before we call it speech onset (barge-in); short words must pass.
    onset_ms: int = 96
    # The server echo guard, while the avatar's voice is playing: a stricter VAD threshold,
    # a longer onset and a level floor, so echo that leaks past the browser's canceller does not
    # interrupt the avatar but a person talking over it does.
    barge_in_threshold: float = 0.7
    barge_in_onset_ms: int = 96
    barge_in_min_dbfs: float = -35.0
    # Audio kept from before the onset so the first phoneme reaches the recogniser.
    preroll_ms: int = 300
    max_utterance_s: int = 30
    partial_interval_ms: int = 250

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AsrSettings":
        env = os.environ if env is None else env
        gpu = profile(env) == "gpu"
        default_vosk = (
            os.path.join(models_dir(env), "vosk", "vosk-model-small-en-us-0.15") if gpu else ""
        )
        vosk_model = env_str(env, "AVATAR_VOSK_MODEL", default_vosk)
        return cls(
            engine=env_choice(
                env, "AVATAR_ASR_ENGINE", "vosk" if vosk_model else "pocketsphinx", ENGINES
            ),
            vosk_model=vosk_model,
            endpoint_silence_ms=env_int(env, "AVATAR_ENDPOINT_SILENCE_MS", 280, 64, 5000),
            vad_threshold=env_float(env, "AVATAR_VAD_THRESHOLD", 0.5, 0.05, 0.99),
            onset_ms=env_int(env, "AVATAR_ONSET_MS", 96, 32, 2000),
            barge_in_threshold=env_float(env, "AVATAR_BARGE_IN_THRESHOLD", 0.7, 0.05, 0.99),
            barge_in_onset_ms=env_int(env, "AVATAR_BARGE_IN_ONSET_MS", 96, 32, 2000),
            barge_in_min_dbfs=env_float(env, "AVATAR_BARGE_IN_MIN_DBFS", -35.0, -90.0, 0.0),
            preroll_ms=env_int(env, "AVATAR_PREROLL_MS", 300, 0, 2000),
            max_utterance_s=env_int(env, "AVATAR_MAX_UTTERANCE_S", 30, 2, 300),
            partial_interval_ms=env_int(env, "AVATAR_PARTIAL_INTERVAL_MS", 250, 50, 5000),
        )
