"""The ASR word-error-rate benchmark runs end to end on a small slice of its set."""

from __future__ import annotations

import json

import pytest

from bench import bench_wer


def test_each_beam_width_is_its_own_row(tmp_path, capsys):
    assert bench_wer.main(["--engines", "whisper-short", "--beams", "1,5", "--limit", "2", "--no-piper",
                           "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "wer.json").read_text())
    rows = report["results"]
    assert [(r["engine"], r["beam"]) for r in rows] == [("whisper-short beam 1", 1), ("whisper-short beam 5", 5)]
    assert report["cut"] == "vad" and all(r["cut"] == "vad" for r in rows)
    for row in rows:
        # 2 sentences x 4 espeak voices, each cut by the service's detector into one transcript;
        # the final decode may be the tentative one reused (0 ms), the whole work is not.
        assert len(row["utterances"]) == 8 and 0.0 <= row["wer"] <= 1.0
        assert all(u["compute_ms"] > 0 and u["final_ms"] >= 0 and u["hypothesis"] for u in row["utterances"])
    assert "whisper-short beam 5" in capsys.readouterr().out


def test_the_fixed_cut_feeds_the_set_as_it_is(tmp_path):
    assert bench_wer.main(["--engines", "whisper-short", "--cut", "fixed", "--limit", "1", "--no-piper",
                           "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "wer.json").read_text())["results"]
    assert row["cut"] == "fixed" and all(u["final_ms"] > 0 for u in row["utterances"])


def test_a_beam_width_below_one_is_refused():
    with pytest.raises(SystemExit):
        bench_wer.main(["--beams", "0", "--limit", "1"])
