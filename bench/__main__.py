"""``python -m bench --out DIR [--quick]``: the benchmark suite on this machine.

Writes DIR/results.json, DIR/summary.md and PNG plots; every figure names the hardware.
``--quick`` is a small version (a few minutes) for checking that everything runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.report import write_report
from bench.suite import Plan, run_suite


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--quick", action="store_true", help="a small run, to check that it all works")
    args = parser.parse_args(argv)
    results = run_suite(args.out, Plan.quick() if args.quick else Plan.full(), argv)
    summary = write_report(results, args.out)
    print(summary)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'summary.md'} and plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
