#!/usr/bin/env bash
# Container entrypoint: make sure the gateway has a TLS certificate, then run the command; a
# service that stops on a configuration error parks instead of restart-looping.
#
# Browsers give a page the microphone only in a secure context, and a GPU box is reached from
# another machine, so the gateway serves HTTPS. When AVATAR_TLS_CERT and AVATAR_TLS_KEY name
# files that do not exist yet, a self-signed certificate is generated there once (the /certs
# volume keeps it across restarts, so the browser exception the user accepted stays valid).
# Files the user mounts are never touched.
#
# Settings (environment):
#   AVATAR_TLS_CERT, AVATAR_TLS_KEY  certificate and key paths (both, or neither)
#   AVATAR_PUBLIC_HOST               host name or IP browsers use; added to the certificate
#   AVATAR_TLS_DAYS                  validity of a generated certificate (default 825)
#
# Configuration errors. docker-compose.yml restarts a stage service that exits (`restart:
# unless-stopped`, so that crashes heal and everything comes back after a reboot), but a wrong
# setting fails the same way on every start: Docker would loop on it forever, burying the reason
# in repeated logs. So `python -m services.<stage>` runs as a child of this script, and when it
# exits with a status that means "configuration error", the reason stays the last thing in the
# log and the container waits idle instead (it shows as unhealthy) until it is recreated or
# restarted. Those statuses:
#   2   a bad AVATAR_* setting (services/cli.py) or command line (argparse)
#   78  EX_CONFIG (services/config_errors.py): a configured model is missing (e.g. coqui-xtts
#       without its licensed fetch, an AVATAR_LLM_MODEL that is not in the models volume), a
#       setting turned out unusable while loading, the GPU profile cannot use CUDA
#       (services/cuda_check.py), or AVATAR_LIPSYNC_ENGINE is wav2lip and there is no Wav2Lip
#       checkpoint (checked here, before Python loads a model)
# Any other status (1: a crash) is passed on, so the restart policy restarts the container.
set -euo pipefail

log() { printf 'docker-entrypoint: %s\n' "$*" >&2; }

# Prints the subjectAltName list: localhost, loopback, and the public host if one is set.
subject_alt_names() {
    local names="DNS:localhost,IP:127.0.0.1"
    local host="${AVATAR_PUBLIC_HOST:-}"
    if [[ -n "$host" && "$host" != "localhost" && "$host" != "127.0.0.1" ]]; then
        if [[ "$host" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || "$host" == *:* ]]; then
            names="$names,IP:$host"
        else
            names="$names,DNS:$host"
        fi
    fi
    printf '%s' "$names"
}

ensure_certificate() {
    local cert="${AVATAR_TLS_CERT:-}" key="${AVATAR_TLS_KEY:-}"
    if [[ -z "$cert" && -z "$key" ]]; then
        return 0  # plain HTTP (only sensible behind a TLS-terminating proxy)
    fi
    if [[ -z "$cert" || -z "$key" ]]; then
        log "set both AVATAR_TLS_CERT and AVATAR_TLS_KEY, or neither"
        exit 2
    fi
    if [[ -s "$cert" && -s "$key" ]]; then
        return 0  # the user's own, or one generated on an earlier start
    fi
    if [[ -e "$cert" || -e "$key" ]]; then
        log "only one of $cert and $key exists; remove it or supply both"
        exit 2
    fi
    local dir
    dir="$(dirname "$cert")"
    mkdir -p "$dir" "$(dirname "$key")"
    # Generate beside the target and rename, so a crash never leaves half a key pair behind.
    local tmp
    tmp="$(mktemp -d "$dir/.selfsigned.XXXXXX")"
    local san
    san="$(subject_alt_names)"
    log "no certificate at $cert: generating a self-signed one for $san"
    # openssl writes key-generation progress to stderr; show it only when something went wrong.
    local output
    if ! output="$(openssl req -x509 -newkey rsa:2048 -sha256 -nodes \
        -days "${AVATAR_TLS_DAYS:-825}" \
        -subj "/CN=${AVATAR_PUBLIC_HOST:-localhost}/O=talking-avatar self-signed" \
        -addext "subjectAltName=$san" \
        -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>&1)"; then
        log "openssl failed: $output"
        rm -rf "$tmp"
        exit 1
    fi
    chmod 600 "$tmp/key.pem"
    chmod 644 "$tmp/cert.pem"
    mv "$tmp/key.pem" "$key"
    mv "$tmp/cert.pem" "$cert"
    rmdir "$tmp"
    log "browsers will warn once about this certificate; accept it to continue"
}

EX_CONFIG=78

# Prints the checkpoint path when the lip-sync settings ask for Wav2Lip and the file is missing.
# The project's own settings code resolves engine and path (profile defaults included); if it
# cannot parse them, print nothing and let the service report the bad setting itself.
missing_wav2lip_checkpoint() {
    python - <<'PY' 2>/dev/null || true
import os
from services.lipsync.settings import LipsyncSettings
s = LipsyncSettings.from_env()
if s.engine == "wav2lip" and not os.path.isfile(s.wav2lip_checkpoint):
    print(s.wav2lip_checkpoint or "(none configured)")
PY
}

# Logs why, then waits for `docker stop` (the container's init passes SIGTERM on to sleep).
park() {
    local service="$1" status="$2"
    log "$service stopped on a configuration error (exit status $status, reason above)."
    log "Restarting cannot fix that, so this container now waits idle instead of restart-looping."
    log "Fix it (.env, the host's GPU setup or the files in AVATAR_DATA_DIR), then run"
    log "  docker compose up -d          (after editing .env: recreates what changed)"
    log "  docker compose restart $service   (after fixing the host or adding a file)"
    exec sleep infinity
}

# Runs a stage service as a child, passing on the signals Docker sends, and parks on a
# configuration error; any other status is this script's own, so restart policies still apply.
run_stage() {
    local service="$1"
    shift
    if [[ "$service" == "lipsync" ]]; then
        local missing
        missing="$(missing_wav2lip_checkpoint)"
        if [[ -n "$missing" ]]; then
            log "lipsync: AVATAR_LIPSYNC_ENGINE=wav2lip, but there is no Wav2Lip checkpoint at $missing."
            log "Wav2Lip's weights are licensed for non-commercial use only and never downloaded for you:"
            log "get wav2lip_gan.pth from https://github.com/Rudrabha/Wav2Lip and put it in AVATAR_DATA_DIR"
            log "on the host (mounted at /data; AVATAR_WAV2LIP_CHECKPOINT names the file), or set"
            log "AVATAR_LIPSYNC_ENGINE=musetalk in .env (MIT weights, fetched automatically)."
            park "$service" "$EX_CONFIG"
        fi
    fi
    # A restarted container keeps its /tmp, and with it the heartbeat file of the run that died.
    # Its pid is reused (a fresh pid namespace numbers the same way), so the healthcheck would
    # take the new, still loading process for the stale one and kill it, again and again.
    rm -f "${AVATAR_RUN_DIR:-${TMPDIR:-/tmp}}/avatar-heartbeat-$service"
    # Docker stops a container with SIGTERM to this script (under `init: true`, tini passes it
    # on); the service needs it for its phased shutdown. Background children ignore SIGINT, so
    # both become SIGTERM. Trapped before the start, so that an early signal is not lost.
    local child="" stopping="" status
    trap 'stopping=1; [[ -z "$child" ]] || kill -TERM "$child" 2>/dev/null || true' TERM INT
    "$@" &
    child=$!
    if [[ -n "$stopping" ]]; then
        kill -TERM "$child" 2>/dev/null || true
    fi
    # `wait` returns early when a trapped signal arrives; the child may still be shutting down.
    while kill -0 "$child" 2>/dev/null; do
        wait "$child" || true
    done
    status=0
    wait "$child" || status=$?  # bash keeps the status of a reaped child
    trap - TERM INT
    # Not after `docker stop`: a service that stops then is done, whatever its status.
    if [[ -z "$stopping" && ( "$status" == 2 || "$status" == "$EX_CONFIG" ) ]]; then
        park "$service" "$status"
    fi
    exit "$status"
}

# Only the process that serves HTTPS needs a certificate; the other services share this script.
if [[ "$*" == *"services.gateway"* || "$*" == *"main.py"* && "$*" != *"main.py fetch"* ]]; then
    ensure_certificate
fi

# A one-off `--check` or `--help` (docker compose run --rm llm python -m services.llm --check)
# reports its own status; only the long-running service parks.
if [[ "$*" =~ services\.(gateway|asr|llm|tts|lipsync) && " $* " != *" --check "* && " $* " != *" --help "* ]]; then
    run_stage "${BASH_REMATCH[1]}" "$@"
fi

exec "$@"
