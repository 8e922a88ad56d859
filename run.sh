#!/usr/bin/env bash
# Command 1: set up (first time) and run the avatar on the embedded default, offline, on the CPU.
# Extra arguments go to main.py, e.g. ./run.sh --port 9000
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh runtime
exec .venv/bin/python main.py "$@"
