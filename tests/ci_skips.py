"""Under ``CI=true`` a skipped test fails, unless it is on the allow-list below.

A test that skips where nobody looks checks nothing: a missing tool (node, chromium, openssl) or
package would turn a check off silently. CI installs everything (``scripts/setup.sh dev``), so
there a skip is a defect. The allow-list holds only tests whose condition is the hardware, which
the CI machine cannot change; each says why.
"""

from __future__ import annotations

import os

import pytest

# "file::test" (any parameters) -> why it may skip under CI.
CI_MAY_SKIP = {
    # These check the diagnosis on a machine *without* a working GPU; on a GPU runner they skip.
    "tests/test_cuda_check.py::test_gpu_profile_on_this_cpu_machine_names_the_torch_build_and_nvidia_smi":
        "a working GPU",
    "tests/test_cuda_check.py::test_require_cuda_logs_the_reason_and_exits_ex_config": "a working GPU",
    "tests/test_cuda_check.py::test_gpu_service_check_stops_at_cuda_before_loading_a_model": "a working GPU",
    "tests/test_bench_gpu.py::test_cuda_without_a_gpu_exits_with_the_cuda_check_diagnosis": "a working GPU",
    # bf16 Wav2Lip needs a CPU with native bf16 (AVX512-BF16 or AMX); not every runner has one.
    "tests/test_wav2lip_inference.py::test_bf16_channels_last_stays_close_to_fp32": "no native bf16 on this CPU",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def may_skip(nodeid: str) -> bool:
    return nodeid.split("[", 1)[0] in CI_MAY_SKIP


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and in_ci() and not may_skip(item.nodeid):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI=true ({reason}): CI must run every test; install what it needs "
            "(scripts/setup.sh dev), or add it to CI_MAY_SKIP in tests/ci_skips.py with the hardware reason"
        )
