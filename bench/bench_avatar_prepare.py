"""Benchmark avatar preparation: how long until an uploaded face is ready to talk to.

    python bench/bench_avatar_prepare.py [--out bench-results/avatar_prepare.json] [--video-s 10]

Measured the way the gateway does it: ``python -m services.avatar.prepare`` as a child process
(interpreter start, decoding, checks, idle loop, face tracking, thumbnail, the store's atomic
write), then the lip-sync stage loading it (``engine.with_avatar``: the embedded engine's
animation fields). Inputs, made here: a 12-megapixel (4000x3000) JPEG and a 10 s 1080p 25 fps
H.264 video of scikit-image's astronaut. Also Wav2Lip's own step (face boxes and 96x96 crops)
on both, which needs no weights; and 20 bad files through the child: each must be a clear
error (a code and a sentence) with no traceback on stdout or stderr.

Goals (2-core CPU): photo <= 10 s, video <= 60 s.
"""

from __future__ import annotations

import argparse
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


def engine_load_s(cache: Path, avatar_id: str) -> tuple[float, float]:
    """(embedded engine with_avatar s, Wav2Lip step s) in a fresh process, as lip-sync does."""
    code = (
        "import sys, time, json\n"
        "from services.avatar.store import AvatarStore\n"
        "from services.lipsync.animation_engine import AnimationEngine\n"
        "from services.lipsync.avatar_steps import wav2lip_avatar\n"
        f"store = AvatarStore({str(cache)!r})\n"
        "base = AnimationEngine.default()\n"
        f"t = time.perf_counter(); p = store.load({avatar_id!r}); base.with_avatar(store, p)\n"
        "a = time.perf_counter() - t\n"
        "t = time.perf_counter(); wav2lip_avatar(store, p, None); w = time.perf_counter() - t\n"
        "print(json.dumps([a, w]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    animation_s, wav2lip_s = json.loads(out.stdout.strip().splitlines()[-1])
    return animation_s, wav2lip_s


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
    for name, path in inputs.items():
        child_s, last, _log = run_child(cache, path)
        if not last.get("ok"):
            raise SystemExit(f"{name}: {last}")
        avatar = last["avatar"]
        animation_s, wav2lip_s = engine_load_s(cache, avatar["id"])
        ready_s = child_s + animation_s
        result["cases"][name] = {
            "file_mb": round(path.stat().st_size / 2**20, 2), "frames": avatar["frames"],
            "size": [avatar["width"], avatar["height"]], "prepare_child_s": round(child_s, 2),
            "embedded_engine_load_s": round(animation_s, 2), "ready_s": round(ready_s, 2),
            "goal_s": GOALS_S[name], "met": ready_s <= GOALS_S[name], "wav2lip_step_s": round(wav2lip_s, 2),
        }
        print(f"{name:12s} {path.stat().st_size / 2**20:6.1f} MB -> {avatar['frames']:3d} frame(s) "
              f"{avatar['width']}x{avatar['height']}: prepared {child_s:5.2f} s + embedded engine load "
              f"{animation_s:4.2f} s = ready in {ready_s:5.2f} s (goal {GOALS_S[name]:.0f} s); "
              f"Wav2Lip step {wav2lip_s:5.2f} s")
    clear, tracebacks = 0, 0
    for name, (path, code) in bad_files(work / "bad").items():
        _s, last, log = run_child(cache, path)
        tracebacks += "Traceback" in log
        clear += (not last.get("ok")) and last.get("code") == code and bool(last.get("message"))
    result["bad_files"] = {"files": 20, "clear_errors": clear, "tracebacks": tracebacks}
    print(f"bad files: 20 -> {clear} clear errors with the expected code, {tracebacks} tracebacks")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return 0 if all(c["met"] for c in result["cases"].values()) and clear == 20 and tracebacks == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
