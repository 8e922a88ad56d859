"""Benchmark avatar preparation: how long until an uploaded face is ready to talk to.

    python bench/bench_avatar_prepare.py [--out bench-results/avatar_prepare.json] [--video-s 10]

Measured as a person gets it: the real gateway and lip-sync processes (``python -m
services.gateway`` / ``services.lipsync`` on a private bus), ``POST /api/avatars``, then ``GET
/api/avatars/{id}`` until "ready": the store's part (``python -m services.avatar.prepare`` as a
child process: decoding, checks, idle loop, face tracking, thumbnail, the atomic write) and the
lip-sync engine's own step, run by the lip-sync stage (``PrepareAvatar``). Once with the
embedded engine (the photo animation), once with Wav2Lip (its step, face boxes and 96x96 crops,
uses no weights, so a random-weight checkpoint of the real architecture stands in for the
non-commercial file). The store part alone is also timed (the child on its own), so the
engine's share shows. Inputs, made here: a 12-megapixel (4000x3000) JPEG and a 10 s 1080p 25 fps
H.264 video of scikit-image's astronaut; and 20 bad files through the child: each must be a
clear error (a code and a sentence) with no traceback on stdout or stderr.

Goals (2-core CPU): photo <= 10 s, video <= 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.avatar_files import bad_files, phone_photo, write_video  # noqa: E402
from bench.result_file import write_json  # noqa: E402
from services.avatar.store import AvatarStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOALS_S = {"photo_12mp": 10.0, "video_1080p": 60.0}


def run_child(cache: Path, source: Path) -> tuple[float, dict, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "services.avatar.prepare", "--cache-dir", str(cache), "--source", str(source)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    elapsed = time.perf_counter() - started
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return elapsed, lines[-1], proc.stdout + proc.stderr


def random_wav2lip(path: Path) -> Path:
    """A random-weight checkpoint of the real Wav2Lip generator (its avatar step uses no weights)."""
    import torch

    from wav2lip.model import Wav2Lip

    torch.manual_seed(0)
    torch.save({"state_dict": Wav2Lip().state_dict()}, path)
    return path


async def _upload(url: str, path: Path) -> tuple[float, dict]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", path.read_bytes(), filename=path.name)
        started = time.perf_counter()
        async with http.post(f"{url}/api/avatars", data=form) as r:
            job = await r.json()
        while job.get("status") == "preparing":
            await asyncio.sleep(0.05)
            async with http.get(f"{url}/api/avatars/{job['id']}") as r:
                job = await r.json()
        return time.perf_counter() - started, job


def ready_through_the_page(engine: str, inputs: dict[str, Path], work: Path) -> dict[str, tuple[float, dict]]:
    """Upload each input to a fresh gateway + lip-sync on ``engine``; seconds until "ready"."""
    from bench.service_stack import ServiceStack

    env = {"AVATAR_LIPSYNC_ENGINE": engine, "AVATAR_CACHE_DIR": str(work / f"cache-{engine}"),
           "AVATAR_FACE_DETECTOR": "haar", "AVATAR_DEVICE": "cpu"}
    if engine == "wav2lip":
        env["AVATAR_WAV2LIP_CHECKPOINT"] = str(random_wav2lip(work / "random-wav2lip.pth"))
    out = {}
    with ServiceStack(env) as stack:
        stack.start("lipsync", "gateway")
        stack.wait_ready("lipsync", "gateway")
        for name, path in inputs.items():
            out[name] = asyncio.run(_upload(stack.url, path))
            if out[name][1].get("status") != "ready":
                raise SystemExit(f"{engine} {name}: {out[name][1]}\n{stack.log_tail('lipsync')}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results/avatar_prepare.json")
    parser.add_argument("--video-s", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-avatar-"))
    cache = work / "cache"
    AvatarStore(str(cache))
    inputs = {
        "photo_12mp": phone_photo(work / "phone.jpg"),
        "video_1080p": write_video(work / "clip.mp4", args.video_s, (1920, 1080)),
    }
    result: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "cases": {}}
    embedded = ready_through_the_page("animation", inputs, work)
    wav2lip = ready_through_the_page("wav2lip", inputs, work)
    for name, path in inputs.items():
        child_s, last, _log = run_child(cache, path)
        if not last.get("ok"):
            raise SystemExit(f"{name}: {last}")
        avatar = last["avatar"]
        ready_s, w2l_s = embedded[name][0], wav2lip[name][0]
        result["cases"][name] = {
            "file_mb": round(path.stat().st_size / 2**20, 2), "frames": avatar["frames"],
            "size": [avatar["width"], avatar["height"]], "store_part_s": round(child_s, 2),
            "ready_s": round(ready_s, 2), "goal_s": GOALS_S[name], "met": ready_s <= GOALS_S[name],
            "wav2lip_ready_s": round(w2l_s, 2),
        }
        print(f"{name:12s} {path.stat().st_size / 2**20:6.1f} MB -> {avatar['frames']:3d} frame(s) "
              f"{avatar['width']}x{avatar['height']}: upload to ready {ready_s:5.2f} s with the embedded engine "
              f"(goal {GOALS_S[name]:.0f} s), {w2l_s:5.2f} s with Wav2Lip's preparation; "
              f"the store's part alone {child_s:5.2f} s")
    clear, tracebacks = 0, 0
    for name, (path, code) in bad_files(work / "bad").items():
        _s, last, log = run_child(cache, path)
        tracebacks += "Traceback" in log
        clear += (not last.get("ok")) and last.get("code") == code and bool(last.get("message"))
    result["bad_files"] = {"files": 20, "clear_errors": clear, "tracebacks": tracebacks}
    print(f"bad files: 20 -> {clear} clear errors with the expected code, {tracebacks} tracebacks")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0 if all(c["met"] for c in result["cases"].values()) and clear == 20 and tracebacks == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
