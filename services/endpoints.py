"""Where each ZeroMQ socket lives, read once from the environment.

Each endpoint is the address *connecting* peers use. The side that binds uses the same address,
except in containers, where a ``tcp://name:port`` is bound on an address of the container's own:
``AVATAR_BIND_HOST`` (an IP address; ZeroMQ binds no DNS names) or, with ``AVATAR_BIND_ALL=1``,
every interface (``tcp://*:port``). The gateway, which also sits on the media network that
coturn and the host reach, binds only on its address on the internal bus network, so that
nothing but the other services can reach its sockets.

The embedded default uses ``ipc://`` files in one runtime folder, so two instances on one host
(or parallel tests) never collide and nothing listens on the network.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

_NAMES = {
    "asr_in": "AVATAR_ASR_IN",
    "llm_in": "AVATAR_LLM_IN",
    "tts_in": "AVATAR_TTS_IN",
    "lipsync_in": "AVATAR_LIPSYNC_IN",
    "gateway_frames": "AVATAR_GATEWAY_FRAMES",
    "gateway_events": "AVATAR_GATEWAY_EVENTS",
    "control": "AVATAR_CONTROL",
    "supervisor": "AVATAR_SUPERVISOR",
}


@dataclass(frozen=True, slots=True)
class Endpoints:
    asr_in: str
    llm_in: str
    tts_in: str
    lipsync_in: str
    gateway_frames: str
    gateway_events: str
    control: str
    supervisor: str  # empty: no supervisor to report readiness to
    bind_host: str = ""  # "" = bind the endpoint as written; "*" = every interface

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Endpoints":
        env = os.environ if env is None else env
        run_dir = env.get("AVATAR_RUN_DIR") or os.path.join(tempfile.gettempdir(), "avatar")
        values = {
            attr: env.get(var) or (
                "" if attr == "supervisor" else f"ipc://{os.path.join(run_dir, attr)}.sock"
            )
            for attr, var in _NAMES.items()
        }
        bind_host = env.get("AVATAR_BIND_HOST", "") or ("*" if env.get("AVATAR_BIND_ALL", "") == "1" else "")
        return cls(**values, bind_host=bind_host)

    @classmethod
    def in_dir(cls, run_dir: str) -> "Endpoints":
        """ipc endpoints inside ``run_dir`` (what main.py and the tests use)."""
        return cls.from_env({"AVATAR_RUN_DIR": run_dir})

    def to_env(self) -> dict[str, str]:
        env = {var: getattr(self, attr) for attr, var in _NAMES.items()}
        if self.bind_host:
            env["AVATAR_BIND_HOST"] = self.bind_host
        return env

    def bind_address(self, endpoint: str) -> str:
        if self.bind_host and endpoint.startswith("tcp://"):
            port = endpoint.rsplit(":", 1)[1]
            return f"tcp://{self.bind_host}:{port}"
        return endpoint
