"""CPU an idle call costs: the avatar's processes and Chromium, with no call and with a call in
which nobody speaks (the idle picture at 25 fps, silence, the microphone listened to).

That CPU is taken from the LLM and TTS while the user asks a question (issue 24). Measured as
CPU seconds per wall second from /proc (load on the machine stretches wall time, not CPU
time, so the figures hold on a shared machine). Linux only.
Usage: ``python -m bench.bench_idle_cpu --seconds 15 --out bench-results/idle-cpu.json``
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.avatar_process import AvatarProcess
from bench.browser import open_call, write_mic_wav
from bench.hardware import hardware
from bench.result_file import write_json

_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def _name(pid: int) -> str:
    # Chromium rewrites its children's command lines into one space-separated string.
    line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    module = re.search(r" -m (\S+)", line)  # python -m services.gateway -> services.gateway
    if module:
        return module.group(1)
    kind = re.search(r"--type=(\S+)", line)  # chromium --type=renderer -> chromium renderer
    if kind:
        return "chromium " + kind.group(1)
    return "chromium" if "chrom" in line else Path(line.split(" ", 1)[0]).name


def _cpu_s(pids: list[int]) -> dict[int, tuple[str, float]]:
    out = {}
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            out[p] = (_name(p), (int(fields[11]) + int(fields[12])) / _TICK)
        except (OSError, ValueError, IndexError):
            continue  # it exited meanwhile
    return out


def cores_between(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall_s: float
) -> dict[str, float]:
    """Cores each named process kept busy between two ``_cpu_s`` readings ``wall_s`` apart
    (processes of one name summed; one that started or exited in between is left out)."""
    by_name: dict[str, float] = {}
    for p, (name, cpu) in after.items():
        if p in before:
            by_name[name] = by_name.get(name, 0.0) + (cpu - before[p][1]) / wall_s
    return {k: round(v, 3) for k, v in sorted(by_name.items()) if v >= 0.001}


def cores_used(pids: list[int], seconds: float) -> dict[str, float]:
    """Cores each named process kept busy over ``seconds`` (processes of one name summed)."""
    before, t0 = _cpu_s(pids), time.monotonic()
    time.sleep(seconds)
    return cores_between(before, _cpu_s(pids), time.monotonic() - t0)


def run(seconds: float, out: Path) -> dict:
    from tests.speech import mouth_box_of_default_avatar

    proc = AvatarProcess()
    try:
        proc.wait_ready()
        time.sleep(5)  # warm-ups finish
        avatar = _children(proc.proc.pid)
        no_call = cores_used(avatar, seconds)
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "silence.wav"
            write_mic_wav(wav, np.zeros(16000, np.int16), 1.0, seconds + 60)
            with open_call(proc.url, wav, mouth_box_of_default_avatar()) as (_page, _):
                time.sleep(3)  # the call settles (keyframes, bitrate)
                me = os.getpid()
                idle_call = cores_used(_children(proc.proc.pid) + [p for p in _children(me) if p != me], seconds)
    finally:
        proc.stop()
    report = {"benchmark": "idle_call_cpu", "hardware": hardware(), "seconds": seconds,
              "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cores_no_call": no_call, "cores_idle_call": idle_call}
    write_json(out, report)
    for label, figures in (("no call", no_call), ("idle call", idle_call)):
        print(f"{label}: {sum(figures.values()):.2f} cores in all; " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    print(f"wrote {out}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=Path("bench-results/idle-cpu.json"))
    args = parser.parse_args(argv)
    run(args.seconds, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
