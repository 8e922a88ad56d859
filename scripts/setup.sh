#!/usr/bin/env bash
# Set up everything the avatar (runtime) or its tests (dev) need on a fresh Debian/Ubuntu box:
# system packages, a Python 3.11 virtual environment in .venv, and the Python packages, installed
# exactly as locked in locks/ (every version pinned, every file's sha256 checked).
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
  want_cmd node nodejs              # syntax checks of the page's JavaScript
  want_cmd openssl openssl          # the container's certificate script, tested here
  want_cmd sox sox
  want_cmd ffprobe ffmpeg
  want_cmd dockerd docker.io         # the compose stack test (tests/test_docker_stack.py)
  want_cmd debootstrap debootstrap   # its offline base image (scripts/docker-base.sh)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need_pkgs[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

py="$(command -v python3.11 || command -v python3)"
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup: Python 3.11 is required (PyAV 18 and the locked stack); found $("$py" --version)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

lock=locks/cpu-runtime.txt
[ "$mode" = dev ] && lock=locks/cpu-dev.txt
stamp=".venv/.installed-$mode"
sum="$(cat "$lock" locks/nodeps.txt scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  echo "setup: installing Python packages ($lock) into .venv ..."
  # --no-deps: the lock is the complete set, so pip resolves nothing and can pull nothing else.
  # --require-hashes: pip refuses any file whose sha256 is not the locked one.
  install=("${pip[@]}" install --no-deps --require-hashes -r "$lock" -r locks/nodeps.txt)
  if ! "${install[@]}"; then
    # torch +cpu is not on PyPI: this kind of machine keeps it in a local wheel folder; a machine
    # without one gets it from PyTorch's CPU index (the same file, so the same hash).
    echo "setup: retrying with PyTorch's CPU wheel index for torch==2.13.0+cpu" >&2
    "${install[@]}" --extra-index-url https://download.pytorch.org/whl/cpu
  fi
  if [ "$mode" = dev ]; then
    # PyPI's torchaudio is a CUDA build; beside CPU torch its native libraries cannot load. Coqui
    # only needs its pure-Python parts (resample, MelSpectrogram), so drop the native ones.
    if .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)"; then
      ta_dir=$(.venv/bin/python -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('torchaudio').origin))")
      rm -f "$ta_dir"/lib/*.so
    fi
    .venv/bin/python -c "import TTS" || { echo "setup: coqui-tts does not import" >&2; exit 1; }
  fi
  echo "$sum" > "$stamp"
fi
echo "setup: $mode environment ready"
