"""The benchmark suite's analysis and report code, on synthetic data (fast; the suite itself
runs with `python -m bench`)."""

from __future__ import annotations

import json

from bench.av_sync import av_sync
from bench.browser import Conversation
from bench.report import write_report

HW = {"cpu": "Test CPU 9000", "cores": 2, "memory_gib": 8.0, "gpu": None, "os": "linux"}


def _loudness(t: float) -> int:
    """Syllables of irregular loudness (1..3) every 120 ms from t = 1 s, silence before."""
    if t < 1000:
        return 0
    return 1 + (int(t // 120) * 7919) % 3


def _conversation(video_late_ms: float) -> Conversation:
    """Idle face until 1 s, then a voice and a mouth that follows it ``video_late_ms`` late."""
    audio, samples = [], []
    for i in range(600):  # 6 s at 10 ms
        t = 10.0 * i
        audio.append((t, 0.005 * _loudness(t)))
    for i in range(150):  # 6 s at 40 ms
        t = 40.0 * i
        open_ = _loudness(t - video_late_ms)
        samples.append({"t": t, "energy": 0, "bytes": 0, "frames": i, "fps": 25, "w": 512,
                        "mouth": [100 + 20 * open_ + (i % 2) * 0.2] * 128})
    return Conversation(speech_end_ms=800, samples=samples, transcript=[], audio=audio)


def test_av_sync_finds_the_onset_offset_and_no_drift_when_aligned():
    aligned = av_sync(_conversation(0))
    assert abs(aligned["onset_offset_ms"]) <= 40
    late = av_sync(_conversation(80))
    assert 40 <= late["onset_offset_ms"] <= 120
    assert aligned["drift_ms"] == 0 and abs(aligned["lag_first_third_ms"]) <= 40
    assert 40 <= late["lag_first_third_ms"] <= 120 and late["drift_ms"] == 0


def test_report_names_the_hardware_and_writes_plots(tmp_path):
    stage = {"n": 3, "median": 100.0, "p95": 150.0, "worst": 160.0}
    results = {
        "command": "python -m bench --quick", "when": "now", "commit": "abc", "hardware": HW, "duration_s": 1,
        "end_to_end": {"heard_ms": stage | {"median": 900.0}, "uplink_vad_ms": stage, "server_ms": stage,
                       "downlink_ms": stage, "first_audio_ms": stage, "first_lipsynced_frame_ms": stage, "av_onset_offset_ms": stage,
                       "fps": stage, "per_stage_ms": {"endpoint_ms": stage, "asr_ms": stage}, "runs": []},
        "smoothness": {"seconds": 3, "fps_per_second": [25, 24.5, 25], "fps": stage | {"min": 24.5},
                       "freeze_count": 0, "total_freezes_s": 0, "frames_dropped": 0},
        "capacity": {"levels": [{"sessions": 1, "fps_min": 25.0, "fps_mean": 25.0, "late_frames": 0.0, "ok": True}],
                     "sessions_at_25fps": 1, "searched_up_to": 1},
        "lipsync_speed": {"wav2lip": {"fps_by_batch": {"1": 20.0, "8": 40.0}, "upstream_fp32_batch16_fps": 15.0,
                                      "chosen_dtype": "bfloat16", "channels_last": True}},
    }
    text = write_report(results, tmp_path)
    assert "Test CPU 9000" in text
    assert "| first avatar audio heard (last word above -40 dBFS -> answer above -40 dBFS) | 3 | 900 | 150 | 160 |" in text
    assert "| - server (gateway end of speech -> first unit sent) | 3 | 100 | 150 | 160 |" in text
    assert "| first avatar audio, old definition (from the end of the WAV) | 3 | 100 | 150 | 160 |" in text
    summary = (tmp_path / "summary.md").read_text()
    assert summary == text
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["capacity.png", "latency_by_stage.png", "smoothness_fps.png", "wav2lip_fps.png"]
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(results)  # results.json stays plain JSON
