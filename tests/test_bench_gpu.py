"""``python -m bench.gpu``: the one-command GPU benchmark, run here as ``--device cpu --quick``.

The quick run builds the same random-weight models at toy sizes and goes through the same code
paths (the lip-sync engines' render, batched decode with a KV cache, the Coqui engines), so it
must produce the JSON a GPU run produces, with every figure a positive number. Its figures mean
nothing; only the keys and that they are measured are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

PART_KEYS = {"peak_memory_mib", "wall_s"}
LIPSYNC_KEYS = PART_KEYS | {
    "dtype", "model_fps_by_batch", "render_fps_by_sessions", "render_batch_frames",
    "prepare_ms_per_audio_s", "talking_frame_fraction",
}
EXPECTED = {
    "wav2lip": LIPSYNC_KEYS | {"params_m", "channels_last"},
    "musetalk": LIPSYNC_KEYS | {"config", "unet_params_m", "vae_params_m"},
    "llm": PART_KEYS | {"config", "params_m", "weights_mib", "dtype", "prompt_tokens", "new_tokens", "by_sessions"},
    "vits": PART_KEYS | {"config", "params_m", "rtf", "audio_s", "synthesis_s", "first_audio_ms", "dtype"},
    "xtts": PART_KEYS | {"config", "params_m", "gpt_max_audio_tokens", "rtf", "audio_s", "synthesis_s",
                         "first_audio_ms", "dtype"},
}


def _bench(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu", *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout_s, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def _numbers(value: object, path: str = "") -> list[tuple[str, float]]:
    if isinstance(value, dict):
        return [n for key, item in value.items() for n in _numbers(item, f"{path}.{key}")]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [(path, value)]
    return []


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench-gpu")
    result = _bench("--device", "cpu", "--quick", "--out", str(out), timeout_s=240)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout), out


@pytest.mark.slow
def test_quick_cpu_run_reports_every_part_with_the_gpu_runs_keys(quick: tuple[dict, Path]) -> None:
    report, out = quick
    assert json.loads((out / "gpu.json").read_text()) == report, "--out writes what stdout shows"
    assert report["benchmark"] == "gpu" and report["device"] == "cpu" and report["quick"] is True
    assert report["failed"] == []
    assert {"hardware", "torch", "torch_cuda", "cpu_threads", "wall_s"} <= report.keys()
    for part, keys in EXPECTED.items():
        assert set(report[part]) == keys, (part, sorted(set(report[part]) ^ keys))
    for part in ("wav2lip", "musetalk"):
        assert set(report[part]["render_fps_by_sessions"]) == {"1", "4", "16"}, part
        assert report[part]["model_fps_by_batch"], part
        assert report[part]["talking_frame_fraction"] == 1.0, f"{part}: every frame must reach the model"
    assert set(report["llm"]["by_sessions"]) == {"1", "4", "8"}
    for row in report["llm"]["by_sessions"].values():
        assert set(row) == {"first_token_ms", "tokens_per_s", "tokens_per_s_per_session"}
    assert report["llm"]["config"]["num_key_value_heads"] < report["llm"]["config"]["num_attention_heads"], (
        "the tiny config keeps grouped-query attention, as Qwen2.5-7B"
    )


@pytest.mark.slow
def test_quick_cpu_run_measures_positive_numbers_and_no_gpu_memory(quick: tuple[dict, Path]) -> None:
    report, _ = quick
    figures = [n for part in EXPECTED for n in _numbers(report[part], part)]
    assert len(figures) > 40
    assert [(path, v) for path, v in figures if not v > 0] == []
    assert all(report[part]["peak_memory_mib"] is None for part in EXPECTED), "no GPU memory on a CPU"
    # Generous: the budget is "well under 2 minutes" on 2 shared cores; the run itself reports it.
    assert report["wall_s"] < 110, report["wall_s"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a working GPU")
def test_cuda_without_a_gpu_exits_with_the_cuda_check_diagnosis() -> None:
    result = _bench("--device", "cuda", "--quick", timeout_s=120)
    assert result.returncode == 78, result.stderr[-4000:]
    assert "CPU-only build" in result.stderr and "nvidia-smi" in result.stderr
    assert result.stdout == "", "no figures without the device"
