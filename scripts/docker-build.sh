#!/usr/bin/env bash
# Builds the avatar's image, talking-avatar:cpu or talking-avatar:cuda, and the TURN relay's,
# talking-avatar-turn:latest (Debian's coturn, docker/turn/), both on one base (docs/docker.md).
#
#   scripts/docker-build.sh cpu|cuda [docker build options...]
#
# Settings (environment):
#   BASE_IMAGE                default talking-avatar/debian:bookworm, made from Debian's packages
#                             by scripts/docker-base.sh when missing (no registry needed); with a
#                             registry, debian:bookworm-slim is the same release
#   AVATAR_TORCH_CPU_WHEELS   a folder holding the locked torch +cpu wheel (cpu only)
#
# torch 2.13.0+cpu is not on PyPI. When a folder here holds the exact locked wheel (checked
# against the lock's sha256), it is served to the build on 127.0.0.1 for the build's duration,
# so no copy of it stays in an image layer; otherwise the build takes it from PyTorch's CPU index.
# The classic builder (DOCKER_BUILDKIT=0) is used: it is in every Docker engine, BuildKit is not.
set -euo pipefail
cd "$(dirname "$0")/.."

variant="${1:-}"
case "$variant" in
  cpu) lock=locks/cpu-runtime.txt profile=cpu ;;
  cuda) lock=locks/cuda.txt profile=gpu ;;
  *) echo "usage: $0 cpu|cuda [docker build options...]" >&2; exit 2 ;;
esac
shift
log() { printf 'docker-build: %s\n' "$*" >&2; }

base="${BASE_IMAGE:-talking-avatar/debian:bookworm}"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  if [ "$base" = talking-avatar/debian:bookworm ]; then
    scripts/docker-base.sh "$base"
  else
    log "using $base from a registry (pulled by the build)"
  fi
fi

pip_args=()
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  if [ -n "${wheel_dir:-}" ]; then rm -rf "$wheel_dir"; fi
}
trap cleanup EXIT

# Prints the path of the locked torch +cpu wheel in AVATAR_TORCH_CPU_WHEELS or pip's
# find-links folders, if one there has a locked sha256.
local_torch_wheel() {
  local hashes dirs dir f
  hashes="$(awk '/^torch==/ {on=1; next} on && /--hash=sha256:/ {sub(/.*sha256:/, ""); sub(/[ \\].*/, ""); print; next} on {exit}' "$lock")"
  dirs="${AVATAR_TORCH_CPU_WHEELS:-} $(python3 -m pip config list 2>/dev/null | sed -n "s/^[a-z:.]*find-links='\(.*\)'$/\1/p" | tr '\n' ' ')"
  for dir in $dirs; do
    dir="${dir#file://}"
    for f in "$dir"/torch-2.13.0+cpu-cp311-cp311-*.whl; do
      [ -f "$f" ] || continue
      if grep -qx "$(sha256sum "$f" | cut -d' ' -f1)" <<<"$hashes"; then
        printf '%s\n' "$f"
        return 0
      fi
      log "ignoring $f: its sha256 is not in $lock"
    done
  done
  return 1
}

if [ "$variant" = cpu ]; then
  if wheel="$(local_torch_wheel)"; then
    wheel_dir="$(mktemp -d)"
    ln "$wheel" "$wheel_dir/" 2>/dev/null || cp "$wheel" "$wheel_dir/"
    port_file="$wheel_dir/.port"
    # A file server on loopback only, for the build (which runs with the host's network).
    python3 -c '
import functools, http.server, sys
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass
handler = functools.partial(Quiet, directory=sys.argv[1])
try:  # a fixed port keeps the build argument, and so the cached pip layer, the same each time
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), handler)
except OSError:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
open(sys.argv[2], "w").write(str(server.server_address[1]))
server.serve_forever()' "$wheel_dir" "$port_file" "${AVATAR_WHEEL_PORT:-38765}" &
    server_pid=$!
    for _ in $(seq 50); do [ -s "$port_file" ] && break; sleep 0.1; done
    port="$(cat "$port_file")"
    log "torch +cpu from $wheel (sha256 matches the lock), served on 127.0.0.1:$port"
    pip_args=(--build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/" --build-arg "PIP_TRUSTED_HOST=127.0.0.1")
  else
    log "no local torch +cpu wheel: the build takes it from https://download.pytorch.org/whl/cpu"
    pip_args=(--build-arg "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu")
  fi
fi

log "building talking-avatar:$variant on $base"
start=$SECONDS
DOCKER_BUILDKIT=0 docker build --network host \
  --build-arg "BASE_IMAGE=$base" --build-arg "LOCK=$lock" --build-arg "PROFILE=$profile" \
  "${pip_args[@]}" --tag "talking-avatar:$variant" "$@" .
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1/1e9}'; }
log "talking-avatar:$variant built in $((SECONDS - start)) s ($(size "talking-avatar:$variant"))"
start=$SECONDS
DOCKER_BUILDKIT=0 docker build --network host --quiet --build-arg "BASE_IMAGE=$base" \
  --tag talking-avatar-turn:latest docker/turn >/dev/null
log "talking-avatar-turn:latest built in $((SECONDS - start)) s ($(size talking-avatar-turn:latest))"
