#!/bin/bash
# Starts coturn for the avatar: TURN REST API credentials (the gateway mints them per session
# from TURN_SECRET), UDP relays only, and only to the gateway's media address (TURN_PEER).
#
# Settings (environment, from docker-compose.yml):
#   TURN_SECRET       the secret shared with the gateway (AVATAR_TURN_SECRET in .env)
#   TURN_REALM        the TURN realm (default talking-avatar)
#   TURN_PEER         the one address relays may reach: the gateway's address on `media`
#   TURN_RELAY_PORTS  the relay ports, FIRST-LAST, inside this container (not published)
#   TURN_EXTERNAL_IP  for a cloud VM behind 1:1 NAT: PUBLIC_IP or PUBLIC_IP/PRIVATE_IP
#
# A weak secret lets anyone mint credentials for the relay. So an empty, placeholder or short
# one stops here with the reason, and the container waits (unhealthy, never relaying) instead
# of restart-looping; the gateway, which waits for this service to be healthy, does not start.
set -euo pipefail

log() { printf 'turn: %s\n' "$*" >&2; }

PLACEHOLDER="change-me-to-a-long-random-string"
MIN_CHARS=32
secret="${TURN_SECRET:-}"
problem=""
if [[ -z "$secret" ]]; then
    problem="is empty"
elif [[ "$secret" == "$PLACEHOLDER" ]]; then
    problem="is still the placeholder from .env.example"
elif (( ${#secret} < MIN_CHARS )); then
    problem="has ${#secret} characters; it needs at least $MIN_CHARS"
fi
if [[ -n "$problem" ]]; then
    log "AVATAR_TURN_SECRET in .env $problem."
    log "Whoever knows it can mint TURN credentials, so the stack does not start with it."
    log "Put a long random secret in .env, for example this one just made here:"
    log "  AVATAR_TURN_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    log "then run: docker compose up -d"
    exec sleep infinity
fi
if [[ ! "${TURN_PEER:-}" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    log "TURN_PEER must be the gateway's IPv4 address on the media network, got '${TURN_PEER:-}'"
    exec sleep infinity
fi
ports="${TURN_RELAY_PORTS:-49160-49359}"

# The secret goes into a private file, not onto the command line (visible in ps).
conf="$(mktemp /tmp/turnserver.XXXXXX.conf)"
chmod 600 "$conf"
{
    echo "static-auth-secret=$secret"
    echo "realm=${TURN_REALM:-talking-avatar}"
} > "$conf"

args=(
    -c "$conf" --log-file=stdout --simple-log --no-cli --no-tls --no-dtls
    --fingerprint --use-auth-secret --no-software-attribute
    --listening-port=3478 --min-port="${ports%-*}" --max-port="${ports#*-}"
    # Relays carry UDP (WebRTC media) only: a TCP relay could open connections to the
    # gateway's TCP ports.
    --no-tcp-relay --no-multicast-peers
    # Every peer address is denied except the gateway's media address (allowed ranges take
    # precedence over denied ones); loopback peers are refused by default.
    --denied-peer-ip=0.0.0.0-255.255.255.255
    --denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff
    --allowed-peer-ip="$TURN_PEER"
)
if [[ -n "${TURN_EXTERNAL_IP:-}" ]]; then
    args+=(--external-ip="$TURN_EXTERNAL_IP")
fi
log "relaying UDP to $TURN_PEER only, relay ports $ports"
exec turnserver "${args[@]}"
