#!/usr/bin/env bash
# Container entrypoint: make sure the gateway has a TLS certificate, then run the command.
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

# Only the process that serves HTTPS needs a certificate; the other services share this script.
if [[ "$*" == *"services.gateway"* || "$*" == *"main.py"* && "$*" != *"main.py fetch"* ]]; then
    ensure_certificate
fi

exec "$@"
