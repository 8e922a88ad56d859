#!/usr/bin/env bash
# Command 2: set up (first time) everything the tests need, then run the whole suite.
# Extra arguments go to pytest, e.g. ./test.sh -m "not browser"
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh dev
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
