"""bench/result_file.write_json: the one way the benchmarks write their results file."""

from __future__ import annotations

import json

from bench.result_file import write_json


def test_writes_json_into_a_folder_it_makes_and_returns_the_path(tmp_path):
    target = tmp_path / "not" / "yet" / "there.json"
    written = write_json(str(target), {"fps": 25.0, "levels": [1, 2]})
    assert written == target
    assert json.loads(target.read_text(encoding="utf-8")) == {"fps": 25.0, "levels": [1, 2]}
    assert target.read_text(encoding="utf-8").startswith('{\n  "fps"')  # indent 2 by default


def test_keeps_non_ascii_text_when_asked_and_passes_indent_and_default(tmp_path):
    path = write_json(tmp_path / "v.json", {"word": "café"}, ensure_ascii=False)
    assert "café" in path.read_text(encoding="utf-8")
    path = write_json(tmp_path / "raw.json", {"when": object}, indent=None, default=str)
    assert path.read_text(encoding="utf-8") == json.dumps({"when": str(object)})
