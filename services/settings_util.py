"""Small helpers to read typed settings from the environment (read once, at start-up)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from services.config_errors import ConfigurationError


class SettingsError(ConfigurationError, ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, default)


def env_int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an integer") from exc
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is outside {lo}..{hi}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a number") from exc
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is outside {lo}..{hi}")
    return value


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise SettingsError(f"{name}={value!r}: choose one of {', '.join(choices)}")
    return value


def profile(env: Mapping[str, str] | None = None) -> str:
    """'cpu' (embedded default, offline) or 'gpu' (production engines in float16)."""
    env = os.environ if env is None else env
    return env_choice(env, "AVATAR_PROFILE", "cpu", ("cpu", "gpu"))


def models_dir(env: Mapping[str, str] | None = None) -> str:
    """Where fetched production models live (``python main.py fetch`` fills it)."""
    env = os.environ if env is None else env
    return env.get("AVATAR_MODELS_DIR") or os.path.join(os.getcwd(), "models")
