#!/usr/bin/env bash
# Builds the cuda image on this machine and checks what can be checked without a GPU. Not part
# of CI: the build pulls about 4 GB of CUDA wheels from PyPI.
#
#   scripts/docker-check-cuda.sh        (BASE_IMAGE as for scripts/docker-build.sh)
#
# Checks: torch in the image is a CUDA build (torch.version.cuda is set); every service and its
# GPU engines import; `python -m services.lipsync --check` on the gpu profile fails loudly and
# names CUDA, because there is no GPU here (on a GPU box it passes once models are fetched).
set -euo pipefail
cd "$(dirname "$0")/.."

image=talking-avatar:cuda
if [ "${1:-}" != --no-build ]; then
  scripts/docker-build.sh cuda
fi
log() { printf '\n== %s\n' "$*"; }
# No network, as the stack's containers run.
in_image() { docker run --rm --network none -e AVATAR_PROFILE=gpu "$image" "$@"; }

log "image size"
docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%s %.2f GB\n", "'"$image"'", $1/1e9}'

log "torch is a CUDA build"
in_image python -c "
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())
assert torch.version.cuda, 'torch.version.cuda is not set: a CPU build'
"

log "every service and its GPU engines import"
in_image python -c "
import importlib, time
modules = ['services.gateway.server', 'services.asr.service', 'services.asr.vosk_engine',
           'services.llm.service', 'services.llm.transformers_engine', 'services.tts.service',
           'services.tts.coqui_engine', 'services.lipsync.service', 'services.lipsync.musetalk_engine',
           'services.lipsync.wav2lip_engine', 'TTS', 'torchaudio', 'torchcodec', 'diffusers']
for name in modules:
    t = time.monotonic()
    importlib.import_module(name)
    print(f'import {name}: ok ({time.monotonic() - t:.1f} s)')
"

log "python -m services.lipsync --check must fail here and name CUDA"
set +e
output="$(in_image python -m services.lipsync --check 2>&1)"
status=$?
set -e
printf '%s\n' "$output" | tail -n 20
if [ "$status" = 0 ]; then
  echo "FAIL: the check passed on a machine without a GPU" >&2
  exit 1
fi
if ! grep -q CUDA <<<"$output"; then
  echo "FAIL: the check failed (status $status) without naming CUDA" >&2
  exit 1
fi
echo "ok: exit status $status, CUDA named"
