"""main.py: flags win over the environment, and the environment over the defaults, for every option."""

import subprocess
import sys
from pathlib import Path

import pytest

import main
from services.settings_util import SettingsError

ROOT = Path(__file__).resolve().parent.parent

# A valid value for each option, as a flag and as the environment would carry it.
FLAG_VALUES = {
    "host": ("0.0.0.0", "::1"),
    "port": ("9001", "9002"),
    "profile": ("gpu", "cpu"),
    "avatar": ("/a.png", "/b.png"),
    "models_dir": ("/m1", "/m2"),
    "asr_engine": ("vosk", "pocketsphinx"),
    "vosk_model": ("/v1", "/v2"),
    "llm_engine": ("openai", "transformers"),
    "llm_model": ("m/one", "m/two"),
    "llm_url": ("http://127.0.0.1:11434/v1", "http://127.0.0.1:8000/v1"),
    "tts_engine": ("coqui-vits", "piper"),
    "lipsync_engine": ("wav2lip", "animation"),
    "wav2lip_checkpoint": ("/w1.pth", "/w2.pth"),
    "endpoint_silence_ms": ("300", "400"),
    "log_level": ("DEBUG", "ERROR"),
    "ready_timeout": ("30.0", "45.0"),
}


def _resolve(argv: list[str], environ: dict[str, str]):
    return main.resolve_env(main.build_parser().parse_args(argv), environ)


def test_every_option_is_covered_here():
    options = {a.dest for a in main.build_parser()._actions if a.dest != "help"}
    assert options == set(main._OPTION_ENV) == set(FLAG_VALUES)


@pytest.mark.parametrize("option", sorted(FLAG_VALUES))
def test_the_flag_wins_over_the_environment_which_wins_over_the_default(option):
    var = main._OPTION_ENV[option]
    flag_value, env_value = FLAG_VALUES[option]
    flag = ["--" + option.replace("_", "-"), flag_value]
    env, _ = _resolve(flag, {var: env_value})
    assert env[var] == flag_value
    env, _ = _resolve([], {var: env_value})
    assert env[var] == env_value
    env, _ = _resolve([], {})
    assert var not in env or var in ("AVATAR_HOST", "AVATAR_PORT")  # the services' own defaults apply


def test_main_uses_the_resolved_values_itself():
    _, options = _resolve([], {})
    assert (options.host, options.port, options.profile, options.ready_timeout_s) == ("127.0.0.1", 8080, "cpu", 600.0)
    env, options = _resolve([], {"AVATAR_HOST": "::1", "AVATAR_PORT": "9002", "AVATAR_PROFILE": "gpu",
                                 "AVATAR_READY_TIMEOUT_S": "45"})
    assert (options.host, options.port, options.profile, options.ready_timeout_s) == ("::1", 9002, "gpu", 45.0)
    assert (env["AVATAR_HOST"], env["AVATAR_PORT"]) == ("::1", "9002")  # what the gateway child reads
    _, options = _resolve(["--port", "9001", "--profile", "cpu"], {"AVATAR_PORT": "9002", "AVATAR_PROFILE": "gpu"})
    assert (options.port, options.profile) == (9001, "cpu")
    with pytest.raises(SettingsError, match="AVATAR_PROFILE"):
        _resolve([], {"AVATAR_PROFILE": "tpu"})


def _main(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=120)


def test_the_real_main_reads_the_environment_and_the_flag_overrides_it():
    # A bad AVATAR_PORT stops main.py with a message naming it: the environment is read.
    done = _main([], {"AVATAR_PORT": "99999"})
    assert done.returncode == 2 and "AVATAR_PORT=99999" in done.stderr, done.stderr
    # With --port, the same bad AVATAR_PORT is not used: the next bad setting is what stops it.
    done = _main(["--port", "8080"], {"AVATAR_PORT": "99999", "AVATAR_READY_TIMEOUT_S": "0"})
    assert done.returncode == 2 and "AVATAR_READY_TIMEOUT_S" in done.stderr and "AVATAR_PORT" not in done.stderr, done.stderr
