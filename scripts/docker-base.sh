#!/usr/bin/env bash
# Makes the base image of the avatar's images from Debian's packages, for machines that reach a
# Debian mirror but no image registry (air-gapped labs with a local mirror, kiosks, CI here).
#
#   sudo scripts/docker-base.sh [TAG]        default tag: talking-avatar/debian:bookworm
#   then: scripts/docker-build.sh cpu         (uses that tag as BASE_IMAGE; see docs/docker.md)
#
# debootstrap (minbase: apt, dpkg, bash, coreutils, no docs) unpacks Debian bookworm into a
# folder, which `docker import` turns into a one-layer image: the same release as the registry's
# debian:bookworm-slim, built from the same signed packages. The mirror is the one this host's
# apt already uses (DEBIAN_MIRROR overrides it), so a local mirror keeps working offline.
# The host's own extra CA certificates (/usr/local/share/ca-certificates) are added: behind a
# TLS-inspecting proxy, apt and pip inside the image build need them, as the host does.
# Needs root (debootstrap, chroot) and about a minute; idempotent: an existing tag is kept
# unless --force is given.
set -euo pipefail

force=""
if [ "${1:-}" = --force ]; then force=1; shift; fi
tag="${1:-talking-avatar/debian:bookworm}"
suite=bookworm

log() { printf 'docker-base: %s\n' "$*" >&2; }

if [ -z "$force" ] && docker image inspect "$tag" >/dev/null 2>&1; then
  log "$tag exists (--force rebuilds it)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { log "run as root (debootstrap and chroot need it)"; exit 1; }
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The host's Debian mirror: the first URI that serves the suite, from deb822 .sources files or
# one-line sources.list entries; the security archive has another layout, so it is skipped.
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk '/^URIs:/ {u=$2} /^Suites:/ && $0 ~ / '"$suite"'( |$)/ && u !~ /security/ {print u; exit}' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" && $3 == "'"$suite"'" && $2 !~ /security/ {print $2}' || true
}
mirror="${DEBIAN_MIRROR:-$(host_mirror | head -n 1 || true)}"
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs="$(mktemp -d /var/tmp/avatar-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap $suite from $mirror"
debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs" "$mirror" >/dev/null

if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  log "adding this host's extra CA certificates: $(cd /usr/local/share/ca-certificates && echo *.crt)"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
fi
# What an image does not need: downloaded packages and package lists (apt-get update refills them).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar -C "$rootfs" --numeric-owner -c . \
  | docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$tag" >/dev/null
log "tagged $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
