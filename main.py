"""Run the talking avatar on this machine: ``python main.py`` (or ``python main.py fetch``).

``python main.py`` starts the five services (gateway, asr, llm, tts, lipsync) as separate
processes, waits until every one is ready, prints the URL to open, restarts a service that
dies or hangs (no heartbeat for AVATAR_HEARTBEAT_TIMEOUT_S, default 10 s), and stops
everything cleanly on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from services.endpoints import Endpoints
from services.gateway.access import AccessConfigError, resolve_token
from services.heartbeat import heartbeat_timeout_s
from services.runner import setup_logging
from services.settings_util import SettingsError, env_float, env_int, profile
from services.supervisor import Supervisor

logger = logging.getLogger("main")

# CLI option -> environment variable the services read (one settings object per service).
_OPTION_ENV = {
    "host": "AVATAR_HOST",
    "port": "AVATAR_PORT",
    "profile": "AVATAR_PROFILE",
    "avatar": "AVATAR_IMAGE",
    "models_dir": "AVATAR_MODELS_DIR",
    "asr_engine": "AVATAR_ASR_ENGINE",
    "vosk_model": "AVATAR_VOSK_MODEL",
    "llm_engine": "AVATAR_LLM_ENGINE",
    "llm_model": "AVATAR_LLM_MODEL",
    "llm_url": "AVATAR_LLM_URL",
    "tts_engine": "AVATAR_TTS_ENGINE",
    "lipsync_engine": "AVATAR_LIPSYNC_ENGINE",
    "wav2lip_checkpoint": "AVATAR_WAV2LIP_CHECKPOINT",
    "endpoint_silence_ms": "AVATAR_ENDPOINT_SILENCE_MS",
    "log_level": "AVATAR_LOG_LEVEL",
    "ready_timeout": "AVATAR_READY_TIMEOUT_S",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python main.py",
        description="A fully local, real-time talking avatar. Open the printed URL and talk.",
        epilog="`python main.py fetch --help` fetches production models (GPU profile).",
    )
    # Every default is None: a flag that was not given leaves the environment's value (see
    # resolve_env), and the services apply their own defaults to what neither sets.
    parser.add_argument("--host", default=None, help="address to serve on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default 8080)")
    parser.add_argument("--profile", choices=("cpu", "gpu"), default=None,
                        help="cpu: embedded models from packages, offline (default); gpu: production engines in float16")
    parser.add_argument("--avatar", default=None, help="photo or short video of the avatar (default: scikit-image's astronaut)")
    parser.add_argument("--models-dir", default=None, help="where `fetch` put production models (default ./models)")
    parser.add_argument("--asr-engine", choices=("whisper", "pocketsphinx", "vosk"), default=None, help="speech recognition engine (cpu default: whisper)")
    parser.add_argument("--vosk-model", default=None, help="Vosk model folder (selects Vosk)")
    parser.add_argument("--llm-engine", choices=("transformers", "openai"), default=None, help="language model engine")
    parser.add_argument("--llm-model", default=None, help="GGUF file, HF folder or id; with --llm-url the server's model name (default SmolLM2-135M-Instruct on cpu)")
    parser.add_argument("--llm-url", default=None, help="your own OpenAI-compatible LLM server, e.g. http://127.0.0.1:11434/v1 (Ollama); see docs/llm.md")
    parser.add_argument("--tts-engine", choices=("piper", "coqui-vits", "coqui-xtts"), default=None, help="text-to-speech engine")
    parser.add_argument("--lipsync-engine", choices=("animation", "wav2lip", "musetalk"), default=None, help="lip-sync engine")
    parser.add_argument("--wav2lip-checkpoint", default=None, help="your Wav2Lip checkpoint (non-commercial weights; never downloaded)")
    parser.add_argument("--endpoint-silence-ms", type=int, default=None, help="trailing silence that ends an utterance (default 280, chosen by bench.bench_endpointing)")
    parser.add_argument("--log-level", default=None, choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log level (default INFO)")
    parser.add_argument("--ready-timeout", type=float, default=None, help="seconds to wait for models to load (default 600)")
    return parser


@dataclass(frozen=True, slots=True)
class MainOptions:
    """What main.py itself uses of the settings (the services read theirs from ``env``)."""

    host: str
    port: int
    profile: str
    ready_timeout_s: float
    heartbeat_timeout_s: float


def resolve_env(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[dict[str, str], MainOptions]:
    """Flags win over the environment, the environment over the defaults, for every option.

    Raises SettingsError naming the variable when a value (from a flag or the environment)
    cannot be used.
    """
    env = dict(environ)
    for option, var in _OPTION_ENV.items():
        value = getattr(args, option)
        if value is not None:
            env[var] = str(value)
    options = MainOptions(
        host=env.get("AVATAR_HOST") or "127.0.0.1",
        port=env_int(env, "AVATAR_PORT", 8080, 1, 65535),
        profile=profile(env),
        ready_timeout_s=env_float(env, "AVATAR_READY_TIMEOUT_S", 600.0, 1.0, 86400.0),
        heartbeat_timeout_s=heartbeat_timeout_s(env),
    )
    # The gateway (a child) serves where the printed URL points.
    env["AVATAR_HOST"], env["AVATAR_PORT"] = options.host, str(options.port)
    return env, options


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        env, options = resolve_env(args, os.environ)
    except SettingsError as exc:
        print(f"main: bad setting: {exc}", file=sys.stderr)
        return 2
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    setup_logging("main")
    run_dir = tempfile.mkdtemp(prefix="avatar-")
    endpoints = Endpoints.from_env({**env, "AVATAR_RUN_DIR": run_dir, "AVATAR_SUPERVISOR": f"ipc://{run_dir}/supervisor.sock"})
    env.update(endpoints.to_env())
    # The services' heartbeat files (services/health.py) go in this run's folder too.
    env["AVATAR_RUN_DIR"] = run_dir
    scheme = "https" if env.get("AVATAR_TLS_CERT") else "http"
    shown_host = "localhost" if options.host in ("127.0.0.1", "0.0.0.0", "::") else options.host
    url = f"{scheme}://{shown_host}:{options.port}/"
    # Off localhost the gateway requires a token; resolve it here so the printed URL carries it
    # and the gateway (a child) uses the same one.
    cache_dir = env.get("AVATAR_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "avatar"))
    try:
        token = resolve_token(options.host, env, cache_dir)
    except AccessConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if token:
        env["AVATAR_ACCESS_TOKEN"] = token
        url += f"?token={token}"

    def on_ready() -> None:
        # The one line a person (and the tests) look for; stdout on purpose.
        print(f"Avatar ready: open {url}", flush=True)

    supervisor = Supervisor(
        env, endpoints, ready_timeout_s=options.ready_timeout_s, heartbeat_timeout_s=options.heartbeat_timeout_s
    )

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, supervisor.stop)
        return await supervisor.run(on_ready)

    try:
        return asyncio.run(main())
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "fetch":
        from services.fetch import main as fetch_main

        return fetch_main(argv[1:])
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
