"""Writing a benchmark's results file: JSON, into a folder made on demand.

The benchmarks print what they wrote themselves (their output is for a person); this only writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def write_json(path: str | Path, data: object, indent: int | None = 2, ensure_ascii: bool = True,
               default: Callable[[object], object] | None = None) -> Path:
    """Write ``data`` as JSON to ``path`` (UTF-8), making its folder first; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=ensure_ascii, default=default), encoding="utf-8")
    return path
