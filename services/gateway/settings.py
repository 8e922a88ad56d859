"""Typed settings of the gateway (HTTP, WebSocket signaling, WebRTC)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.gateway.access import AccessConfigError, parse_hosts, parse_origins, resolve_token
from services.gateway.limits import LimitSettings
from services.gateway.turn_credentials import TurnSettings, secret_problem
from services.settings_util import SettingsError, env_float, env_int, env_str, profile


# Calls one box holds at 25 fps each. cpu: the embedded default on a 2-core CPU, measured with
# `AVATAR_MAX_CALLS=8 python -m bench.bench_concurrency --clients 1 2 3 4 --ws-only --rounds 3`
# (2026-12-05, docs/bench/concurrency-final-2026-12-05.json: 3 calls asking at once kept 25.0
# fps on average and >= 22 fps every second in every round; 4 fell to 16-19 fps, 7 s below 20,
# so the fourth call is "busy"). (2026-12-01, before the cheaper video path and the int4 LLM:
# 3 calls fell to 12 fps, and the default was 2.)
# gpu: an estimate, not a measurement: on paper from cross-session batched Wav2Lip (docs/capacity.md),
# while the gpu default engine is MuseTalk, which no card here has measured. The gateway says so at
# start when AVATAR_MAX_CALLS is not set; measure with bench.gpu / bench_concurrency and set it.
DEFAULT_MAX_CALLS = {"cpu": 3, "gpu": 8}


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    # Localhost unless configured otherwise (security by default).
    host: str = "127.0.0.1"
    port: int = 8080
    client_dir: str = ""
    # HTTPS: both set = serve TLS (browsers only give the microphone to secure pages off localhost).
    tls_cert: str = ""
    tls_key: str = ""
    # RTCIceServer dicts handed to the browser and to aiortc, e.g. a coturn TURN server.
    ice_servers: tuple[dict, ...] = field(default_factory=tuple)
    # The gateway's own (aiortc's), when they differ: in a container without outbound network a
    # STUN query only delays every answer, since aioice waits for it before answering.
    server_ice_servers: tuple[dict, ...] | None = None
    avatar: str = ""
    max_sessions: int = 16
    # Calls (sessions with media) at once: past this the box cannot hold 25 fps for everyone,
    # so a new call gets "busy" and the admitted ones do not degrade. Measured defaults: see
    # DEFAULT_MAX_CALLS.
    max_calls: int = 3
    # Output queue per session, in media time (backpressure bound).
    queue_ms: int = 200
    # How long after the avatar's last sound the microphone may still carry its echo.
    echo_tail_ms: int = 400
    metrics: bool = True
    # Security (services/gateway/access.py): "" = no token needed (bound to loopback).
    access_token: str = ""
    allowed_origins: tuple[str, ...] = ()
    # Host names besides this machine's that requests may carry (a kiosk's, a reverse proxy's).
    allowed_hosts: tuple[str, ...] = ()
    limits: LimitSettings = field(default_factory=LimitSettings)
    turn: TurnSettings = field(default_factory=TurnSettings)
    # Conversations (services/gateway/conversation.py); ":memory:" keeps them in this process only.
    conversations_db: str = ":memory:"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "GatewaySettings":
        env = os.environ if env is None else env
        ice = _ice_servers(env, "AVATAR_ICE_SERVERS")
        server_ice = _ice_servers(env, "AVATAR_SERVER_ICE_SERVERS") if env.get("AVATAR_SERVER_ICE_SERVERS") else None
        here = os.path.dirname(os.path.abspath(__file__))
        host = env_str(env, "AVATAR_HOST", "127.0.0.1")
        cache_dir = env_str(env, "AVATAR_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "avatar"))
        try:
            token = resolve_token(host, env, cache_dir)
            origins = parse_origins(env.get("AVATAR_ALLOWED_ORIGINS", ""))
            hosts = parse_hosts(env.get("AVATAR_ALLOWED_HOSTS", ""))
        except AccessConfigError as exc:
            raise SettingsError(str(exc)) from exc
        turn_urls = tuple(u.strip() for u in env.get("AVATAR_TURN_URLS", "").split(",") if u.strip())
        turn_secret = env.get("AVATAR_TURN_SECRET", "")
        if turn_urls and not turn_secret:
            raise SettingsError("AVATAR_TURN_URLS needs AVATAR_TURN_SECRET (coturn's static-auth-secret)")
        if turn_secret and (problem := secret_problem(turn_secret)):
            raise SettingsError(f"AVATAR_TURN_SECRET {problem}: make a long random one, e.g. `openssl rand -hex 32`")
        defaults = LimitSettings()
        limits = LimitSettings(
            text_burst=env_int(env, "AVATAR_TEXT_BURST", defaults.text_burst, 1, 1000),
            text_per_min=env_int(env, "AVATAR_TEXT_PER_MIN", defaults.text_per_min, 1, 10000),
            offer_burst=env_int(env, "AVATAR_OFFER_BURST", defaults.offer_burst, 1, 1000),
            offer_per_min=env_int(env, "AVATAR_OFFER_PER_MIN", defaults.offer_per_min, 1, 10000),
            sessions_per_address=env_int(env, "AVATAR_SESSIONS_PER_ADDRESS", defaults.sessions_per_address, 1, 1000),
            idle_timeout_s=env_float(env, "AVATAR_IDLE_TIMEOUT_S", defaults.idle_timeout_s, 5.0, 86400.0),
        )
        return cls(
            host=host,
            port=env_int(env, "AVATAR_PORT", 8080, 1, 65535),
            client_dir=env_str(
                env, "AVATAR_CLIENT_DIR", os.path.normpath(os.path.join(here, "..", "..", "client"))
            ),
            tls_cert=env_str(env, "AVATAR_TLS_CERT", ""),
            tls_key=env_str(env, "AVATAR_TLS_KEY", ""),
            ice_servers=ice,
            server_ice_servers=server_ice,
            avatar=env_str(env, "AVATAR_IMAGE", ""),
            max_sessions=env_int(env, "AVATAR_MAX_SESSIONS", 16, 1, 1000),
            max_calls=env_int(env, "AVATAR_MAX_CALLS", DEFAULT_MAX_CALLS[profile(env)], 1, 1000),
            queue_ms=env_int(env, "AVATAR_QUEUE_MS", 200, 40, 5000),
            echo_tail_ms=env_int(env, "AVATAR_ECHO_TAIL_MS", 400, 0, 5000),
            access_token=token,
            allowed_origins=origins,
            allowed_hosts=hosts,
            limits=limits,
            turn=TurnSettings(turn_urls, turn_secret, env_int(env, "AVATAR_TURN_TTL_S", 3600, 60, 86400)),
            conversations_db=env_str(env, "AVATAR_CONVERSATIONS_DB", os.path.join(cache_dir, "conversations.sqlite3")),
        )


def _ice_servers(env: Mapping[str, str], name: str) -> tuple[dict, ...]:
    raw = env.get(name, "")
    try:
        ice = tuple(json.loads(raw)) if raw else ()
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} is not JSON: {exc}") from exc
    if not all(isinstance(s, dict) and "urls" in s for s in ice):
        raise SettingsError(f"{name} must be a JSON list of {{\"urls\": ...}} objects")
    return ice
