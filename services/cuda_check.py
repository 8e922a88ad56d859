"""Fail loudly, before any model loads, when the GPU profile cannot use CUDA.

``--profile gpu`` (``AVATAR_PROFILE=gpu``) means the models run on CUDA in float16. Without this
guard a container that did not get the GPU quietly takes the ``AVATAR_DEVICE=auto`` fallback to
the CPU and loads a 7B model into RAM, or fails deep inside a model load with an error about
something else. ``require_cuda(service)`` runs first in each GPU service's ``__main__``: it proves
that a tensor op runs on ``cuda:0`` and otherwise exits with ``EX_CONFIG`` and a message that says
why and what to check (a CPU build of torch, missing ``/dev/nvidia*`` device nodes, what
``nvidia-smi`` says, a driver older than torch's CUDA).

When the check applies (``needs_cuda``):
* profile ``gpu`` and ``AVATAR_DEVICE`` not ``cpu`` (``cpu`` skips it on purpose), or
  ``AVATAR_DEVICE=cuda`` on any profile (an explicit request deserves the same diagnosis);
* and the service's engine uses the GPU: ``AVATAR_LLM_ENGINE=openai`` (the model runs in another
  server), ``AVATAR_TTS_ENGINE=piper`` and ``AVATAR_LIPSYNC_ENGINE=animation`` are CPU engines.

Errors: ``CudaUnavailable`` (a ``RuntimeError``) carries the diagnosis; ``require_cuda`` turns it
into ``SystemExit(EX_CONFIG)`` after logging it, and scripts/docker-entrypoint.sh treats that
status as a configuration error (the container parks instead of restart-looping).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from services.config_errors import EX_CONFIG

logger = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT_S = 10.0
# Lines of nvidia-smi output worth quoting: the header (driver, CUDA) and the first GPU.
_SMI_LINES = 12
# Oldest driver branch that runs each CUDA major version (CUDA minor-version compatibility).
_MIN_DRIVER_BRANCH = {12: "R525", 13: "R580"}
# The engine variable of each GPU service, and the engines that never touch the GPU.
_CPU_ENGINES: dict[str, tuple[str, frozenset[str]]] = {
    "llm": ("AVATAR_LLM_ENGINE", frozenset({"openai"})),
    "tts": ("AVATAR_TTS_ENGINE", frozenset({"piper"})),
    "lipsync": ("AVATAR_LIPSYNC_ENGINE", frozenset({"animation"})),
}


class CudaUnavailable(RuntimeError):
    """CUDA is required and this process cannot use it; the message says why and what to check."""


@dataclass(frozen=True, slots=True)
class CudaFacts:
    """What the process and the machine say about CUDA (gathered by ``probe``)."""

    torch_version: str | None  # None: torch does not import
    torch_cuda: str | None  # torch.version.cuda; None for a CPU-only build
    available: bool  # torch.cuda.is_available()
    torch_said: tuple[str, ...]  # warnings torch raised while probing (e.g. "driver too old")
    op_error: str | None  # the tiny op on cuda:0 failed with this; None if it ran (or not tried)
    device_name: str | None
    device_nodes: tuple[str, ...]  # /dev/nvidia*
    smi_path: str | None  # nvidia-smi on PATH
    smi_output: str  # its first lines, or why it gave none
    smi_ok: bool
    driver_version: str | None  # from nvidia-smi's header
    driver_cuda: str | None  # the newest CUDA the driver supports, from nvidia-smi's header

    @property
    def ok(self) -> bool:
        return self.available and self.op_error is None and self.device_name is not None


def needs_cuda(service: str, env: Mapping[str, str]) -> bool:
    device = env.get("AVATAR_DEVICE") or "auto"
    if device == "cpu":
        return False
    if (env.get("AVATAR_PROFILE") or "cpu") != "gpu" and device != "cuda":
        return False
    variable, cpu_engines = _CPU_ENGINES.get(service, ("", frozenset()))
    return not (variable and env.get(variable) in cpu_engines)


def _run_nvidia_smi(path: str, timeout_s: float) -> tuple[bool, str]:
    try:
        result = subprocess.run(
            [path], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return False, (
            f"nvidia-smi did not answer within {timeout_s:.0f} s (a hung driver? look for NVRM "
            "errors in the host's `dmesg`)"
        )
    except OSError as exc:
        return False, f"nvidia-smi could not be run: {exc}"
    text = (result.stdout + result.stderr).strip()
    lines = [line for line in text.splitlines() if line.strip()][:_SMI_LINES]
    return result.returncode == 0, "\n".join(lines) or f"(no output, exit status {result.returncode})"


def _torch_probe() -> tuple[str | None, str | None, bool, tuple[str, ...], str | None, str | None]:
    try:
        import torch
    except ImportError as exc:
        return None, None, False, (f"import torch failed: {exc}",), None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = bool(torch.cuda.is_available())
    said = tuple(str(w.message) for w in caught)
    op_error = name = None
    if available:
        try:
            x = torch.arange(4, device="cuda:0", dtype=torch.float32)
            total = float((x * 2).sum().item())  # .item() waits for the kernel to finish
            if total != 12.0:
                op_error = f"a test sum on cuda:0 gave {total}, not 12.0"
            name = torch.cuda.get_device_name(0)
        except Exception as exc:  # noqa: BLE001 - any failure here is the diagnosis
            op_error = f"{type(exc).__name__}: {exc}"
    return torch.__version__, torch.version.cuda, available, said, op_error, name


def probe(dev_dir: str = "/dev", smi_timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> CudaFacts:
    """Ask torch, the device nodes and nvidia-smi (seconds at most; nothing is loaded)."""
    version, cuda, available, said, op_error, name = _torch_probe()
    smi = shutil.which("nvidia-smi")
    smi_ok, smi_output = _run_nvidia_smi(smi, smi_timeout_s) if smi else (False, "")
    driver = re.search(r"Driver Version:\s*([\d.]+)", smi_output)
    driver_cuda = re.search(r"CUDA Version:\s*([\d.]+)", smi_output)
    return CudaFacts(
        torch_version=version,
        torch_cuda=cuda,
        available=available,
        torch_said=said,
        op_error=op_error,
        device_name=name,
        device_nodes=tuple(sorted(glob.glob(os.path.join(dev_dir, "nvidia*")))),
        smi_path=smi,
        smi_output=smi_output,
        smi_ok=smi_ok,
        driver_version=driver.group(1) if driver else None,
        driver_cuda=driver_cuda.group(1) if driver_cuda else None,
    )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def _driver_hint(torch_cuda: str, driver_cuda: str) -> str | None:
    need, have = _version(torch_cuda), _version(driver_cuda)
    if not need or not have or have >= need:
        return None
    branch = _MIN_DRIVER_BRANCH.get(need[0])
    upgrade = f"a {branch} or newer driver" if branch else f"a driver for CUDA {torch_cuda}"
    if have[0] < need[0]:
        return (
            f"driver/CUDA mismatch: torch is built for CUDA {torch_cuda} but the host driver "
            f"supports CUDA {driver_cuda} at most; install {upgrade} on the host"
        )
    return (
        f"torch is built for CUDA {torch_cuda}, newer than the driver's CUDA {driver_cuda}: minor-"
        f"version compatibility usually covers this, but if CUDA fails, install {upgrade}"
    )


def explain(facts: CudaFacts) -> str:
    """Why CUDA is unusable here, one reason per line, each with what to check."""
    reasons: list[str] = []
    if facts.torch_version is None:
        reasons.append(f"torch is not importable ({'; '.join(facts.torch_said)})")
    elif facts.torch_cuda is None:
        reasons.append(
            f"torch {facts.torch_version} is a CPU-only build (torch.version.cuda is None): "
            "install the CUDA build (the image installs torch from locks/cuda.txt)"
        )
    if not facts.device_nodes:
        reasons.append(
            "no /dev/nvidia* device nodes: the GPU is not passed into this container. Start it "
            "with `docker run --gpus all`, or give the compose service deploy.resources."
            "reservations.devices (driver: nvidia, capabilities: [gpu]); on the host, install "
            "the NVIDIA Container Toolkit and restart Docker"
        )
    if facts.smi_path is None:
        reasons.append(
            "nvidia-smi is not on PATH (the NVIDIA Container Toolkit mounts it into a GPU "
            "container; on the host it comes with the NVIDIA driver)"
        )
    elif not facts.smi_ok:
        reasons.append(f"nvidia-smi failed:\n{_indent(facts.smi_output)}")
    if facts.torch_cuda and facts.driver_cuda:
        hint = _driver_hint(facts.torch_cuda, facts.driver_cuda)
        if hint:
            reasons.append(hint)
    if facts.torch_version is not None and facts.torch_cuda and not facts.available:
        said = "; ".join(facts.torch_said) or "no reason given"
        reasons.append(f"torch.cuda.is_available() is False (torch said: {said})")
    if facts.op_error:
        reasons.append(f"a tiny tensor op on cuda:0 failed: {facts.op_error}")
    if facts.smi_ok and facts.smi_output:
        reasons.append(f"nvidia-smi says:\n{_indent(facts.smi_output)}")
    header = (
        "CUDA is required (the GPU profile, or AVATAR_DEVICE=cuda) but this process cannot use it "
        f"(torch {facts.torch_version or '-'}, built for CUDA {facts.torch_cuda or 'none'}; "
        f"driver {facts.driver_version or '?'} for CUDA {facts.driver_cuda or '?'}):"
    )
    footer = "To run this service on the CPU on purpose (slow), set AVATAR_DEVICE=cpu."
    return "\n".join([header, *(f"  - {r}" for r in reasons), footer])


def _indent(text: str) -> str:
    return "\n".join(f"      {line}" for line in text.splitlines())


def verify_cuda(probe_fn: Callable[[], CudaFacts] = probe) -> CudaFacts:
    """The facts when a tensor op runs on cuda:0; otherwise ``CudaUnavailable`` with the reasons."""
    facts = probe_fn()
    if not facts.ok:
        raise CudaUnavailable(explain(facts))
    return facts


def require_cuda(
    service: str,
    env: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
    probe_fn: Callable[[], CudaFacts] = probe,
) -> None:
    """Entry-point guard: return if CUDA works or is not needed, else log why and exit EX_CONFIG."""
    env = os.environ if env is None else env
    argv = sys.argv[1:] if argv is None else argv
    # --help loads nothing, so it must work on any machine (docs, tests, a CPU laptop).
    if "-h" in argv or "--help" in argv or not needs_cuda(service, env):
        return
    from services.runner import setup_logging  # the service's own log format, set up early

    setup_logging(service)
    try:
        facts = verify_cuda(probe_fn)
    except CudaUnavailable as exc:
        logger.error("%s cannot start: %s", service, exc)
        raise SystemExit(EX_CONFIG) from exc
    logger.info(
        "%s: CUDA ok on %s (torch %s, CUDA %s, driver %s)", service, facts.device_name,
        facts.torch_version, facts.torch_cuda, facts.driver_version or "?",
    )
