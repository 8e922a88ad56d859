"""The GPU profile's CUDA guard (services/cuda_check.py): when it applies, what it says, and
that the GPU services run it first.

This machine has no GPU and a CPU build of torch, which is exactly the failure to explain; the
other failures (driver too old, nvidia-smi hanging or failing) are staged with a fake
nvidia-smi on PATH and fake facts.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from services.cuda_check import (
    EX_CONFIG,
    CudaFacts,
    CudaUnavailable,
    explain,
    needs_cuda,
    probe,
    require_cuda,
    verify_cuda,
)

REPO = Path(__file__).resolve().parent.parent
GPU = {"AVATAR_PROFILE": "gpu"}
no_cuda_here = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a working GPU")

SMI_HEADER = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:19:00.0 Off |                    0 |
"""

HEALTHY = CudaFacts(
    torch_version="2.13.0+cu130", torch_cuda="13.0", available=True, torch_said=(),
    op_error=None, device_name="NVIDIA H100 80GB HBM3", device_nodes=("/dev/nvidia0",),
    smi_path="/usr/bin/nvidia-smi", smi_output=SMI_HEADER.replace("12.4", "13.0"), smi_ok=True,
    driver_version="580.65.06", driver_cuda="13.0",
)


def _must_not_probe() -> CudaFacts:
    raise AssertionError("the CUDA check ran where it should be skipped")


def _fake_smi(folder: Path, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{body}\n")
    smi.chmod(0o755)


# ------------------------------------------------------------------------------ when it applies


@pytest.mark.parametrize(
    ("service", "env", "expected"),
    [
        ("llm", GPU, True),
        ("tts", {**GPU, "AVATAR_DEVICE": "auto"}, True),
        ("lipsync", {**GPU, "AVATAR_LIPSYNC_ENGINE": "musetalk"}, True),
        ("llm", {**GPU, "AVATAR_DEVICE": "cpu"}, False),  # skipped on purpose
        ("llm", {}, False),  # the cpu profile is the default
        ("tts", {"AVATAR_PROFILE": "cpu"}, False),
        ("tts", {"AVATAR_PROFILE": "cpu", "AVATAR_DEVICE": "cuda"}, True),  # asked for explicitly
        ("llm", {**GPU, "AVATAR_LLM_ENGINE": "openai"}, False),  # the model runs elsewhere
        ("tts", {**GPU, "AVATAR_TTS_ENGINE": "piper"}, False),
        ("lipsync", {**GPU, "AVATAR_LIPSYNC_ENGINE": "animation"}, False),
    ],
)
def test_needs_cuda_follows_profile_device_and_engine(service: str, env: dict, expected: bool) -> None:
    assert needs_cuda(service, env) is expected


def test_require_cuda_skips_cpu_device_cpu_profile_and_help() -> None:
    require_cuda("llm", env={**GPU, "AVATAR_DEVICE": "cpu"}, argv=[], probe_fn=_must_not_probe)
    require_cuda("llm", env={"AVATAR_PROFILE": "cpu"}, argv=["--check"], probe_fn=_must_not_probe)
    require_cuda("llm", env=GPU, argv=["--help"], probe_fn=_must_not_probe)


def test_require_cuda_passes_when_a_tensor_op_runs_on_the_gpu() -> None:
    require_cuda("llm", env=GPU, argv=[], probe_fn=lambda: HEALTHY)


# ------------------------------------------------------------------------------ what it says


@no_cuda_here
def test_gpu_profile_on_this_cpu_machine_names_the_torch_build_and_nvidia_smi() -> None:
    with pytest.raises(CudaUnavailable) as caught:
        verify_cuda()
    message = str(caught.value)
    assert "CPU-only build (torch.version.cuda is None)" in message
    assert "nvidia-smi" in message  # not on PATH here; on a GPU host it would be quoted
    assert "/dev/nvidia*" in message and "--gpus all" in message
    assert "deploy.resources.reservations.devices" in message
    assert "AVATAR_DEVICE=cpu" in message


@no_cuda_here
def test_require_cuda_logs_the_reason_and_exits_ex_config(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="services.cuda_check"), pytest.raises(SystemExit) as caught:
        require_cuda("tts", env=GPU, argv=[])
    assert caught.value.code == EX_CONFIG == 78
    assert "tts cannot start" in caplog.text and "CPU-only build" in caplog.text


def test_probe_reads_driver_and_cuda_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(tmp_path / "bin", f"cat <<'EOF'\n{SMI_HEADER}EOF")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidia0").touch()
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    facts = probe(dev_dir=str(tmp_path / "dev"))
    assert facts.smi_ok and facts.driver_version == "550.54.15" and facts.driver_cuda == "12.4"
    assert facts.device_nodes == (str(tmp_path / "dev" / "nvidia0"),)
    assert "NVIDIA H100" in facts.smi_output


def test_probe_gives_up_on_a_hanging_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(tmp_path / "bin", "exec sleep 30")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    facts = probe(dev_dir=str(tmp_path), smi_timeout_s=0.5)
    assert not facts.smi_ok and "did not answer within" in facts.smi_output
    assert "did not answer within" in explain(replace(HEALTHY, available=False, smi_ok=False,
                                                      smi_output=facts.smi_output))


def test_explain_a_driver_older_than_torchs_cuda() -> None:
    facts = replace(HEALTHY, available=False, device_name=None, smi_output=SMI_HEADER,
                    driver_version="550.54.15", driver_cuda="12.4",
                    torch_said=("The NVIDIA driver on your system is too old (found version 12040).",))
    message = explain(facts)
    assert "driver/CUDA mismatch: torch is built for CUDA 13.0" in message
    assert "supports CUDA 12.4 at most" in message and "R580 or newer" in message
    assert "torch said: The NVIDIA driver on your system is too old" in message
    assert "Driver Version: 550.54.15" in message, "nvidia-smi's own words are quoted"
    assert "CPU-only" not in message and "/dev/nvidia*" not in message


def test_explain_a_failing_nvidia_smi_and_a_failing_op() -> None:
    facts = replace(HEALTHY, smi_ok=False, driver_version=None, driver_cuda=None,
                    smi_output="Failed to initialize NVML: Driver/library version mismatch",
                    op_error="AcceleratorError: CUDA error: no kernel image is available")
    message = explain(facts)
    assert "nvidia-smi failed:" in message and "Driver/library version mismatch" in message
    assert "a tiny tensor op on cuda:0 failed: AcceleratorError" in message
    with pytest.raises(CudaUnavailable):
        verify_cuda(lambda: facts)


def test_a_minor_cuda_gap_is_a_hint_not_a_verdict() -> None:
    message = explain(replace(HEALTHY, available=False, torch_cuda="12.8", driver_cuda="12.4"))
    assert "minor-version compatibility usually covers this" in message and "R525" in message


# ------------------------------------------------------------------------------ the services run it first


def _service(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_")}
    return subprocess.run(
        [sys.executable, "-m", f"services.{name}", *args], cwd=REPO, capture_output=True,
        text=True, timeout=120, check=False, env={**clean, "HF_HUB_OFFLINE": "1", **env},
    )


@no_cuda_here
@pytest.mark.parametrize("name", ["llm", "tts", "lipsync"])
def test_gpu_service_check_stops_at_cuda_before_loading_a_model(name: str, tmp_path: Path) -> None:
    # The models dir is empty: had the service got past the CUDA check, --check would fail on a
    # missing model instead, with another message and exit status 1.
    result = _service(name, "--check", AVATAR_PROFILE="gpu", AVATAR_MODELS_DIR=str(tmp_path))
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"{name} cannot start" in result.stderr
    assert "CPU-only build" in result.stderr and "nvidia-smi" in result.stderr


def test_gpu_service_help_works_without_a_gpu() -> None:
    result = _service("llm", "--help", AVATAR_PROFILE="gpu")
    assert result.returncode == 0 and "usage:" in result.stdout.lower(), result.stderr
