#!/usr/bin/env bash
# Build llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) into its own venv, once,
# for checks/test_own_llm_server.py and for trying --llm-url without Ollama. PyPI carries only
# the source for Linux, so this compiles llama.cpp: 30-60 min on 2 busy cores. Not part of setup
# or CI. Usage: scripts/build_llama_server.sh [VENV] (default ~/.cache/avatar/llama-server-venv)
set -euo pipefail
VENV="${1:-$HOME/.cache/avatar/llama-server-venv}"
VERSION=0.3.36
python3.11 -m venv "$VENV"
CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_OPENMP=OFF" \
  "$VENV/bin/pip" install --no-cache-dir "llama-cpp-python[server]==$VERSION"
echo "built: $VENV/bin/python -m llama_cpp.server --model FILE.gguf --port 8081"
