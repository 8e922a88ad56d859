#!/usr/bin/env bash
# The deliberate, tested dependency upgrade: move every locked package to its newest allowed
# version (within requirements*.txt), rebuild .venv from the new lock, run the whole suite, and
# show what changed. Nothing is committed: review the diff, then commit locks/ yourself.
#   scripts/update-lock.sh          upgrade everything
#   scripts/update-lock.sh --keep   only re-resolve what an edited requirements file changed
set -euo pipefail
cd "$(dirname "$0")/.."
mode=--upgrade
[ "${1:-}" = --keep ] && mode=""
before="$(mktemp -d)"
cp locks/*.txt "$before/"
bash scripts/lock.sh $mode
echo "== version changes =="
for f in locks/*.txt; do
  diff <(grep -E '^[A-Za-z0-9]' "$before/$(basename "$f")" | sed 's/ \\$//') \
       <(grep -E '^[A-Za-z0-9]' "$f" | sed 's/ \\$//') | sed -n "s/^[<>]/$(basename "$f"): &/p" || true
done
echo "== tests on the new lock =="
./test.sh -q
git --no-pager diff --stat -- locks/
