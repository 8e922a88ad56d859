"""An upload's job runs the configured lip-sync engine's own preparation, in the real processes:
the gateway (``python -m services.gateway``) asks the lip-sync stage (``python -m
services.lipsync``) over the ZeroMQ bus, the stage runs the engine's step on the models it
already holds and keeps the result in the avatar's store entry, and a session on that avatar
then takes it from the store. Wav2Lip and MuseTalk run with random weights (Wav2Lip's real
architecture; MuseTalk's published layout, small), as the other tests build them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from bench.avatar_files import my_face, write_photo, write_video
from bench.service_stack import ServiceStack
from tests.wav2lip_helpers import save_random_checkpoint

pytestmark = pytest.mark.slow


def _engine_env(engine: str, tmp_path: Path) -> dict[str, str]:
    env = {"AVATAR_LIPSYNC_ENGINE": engine, "AVATAR_CACHE_DIR": str(tmp_path / "cache"), "AVATAR_DEVICE": "cpu",
           "AVATAR_FACE_DETECTOR": "haar", "AVATAR_LIPSYNC_BATCH": "4"}
    if engine == "wav2lip":
        env["AVATAR_WAV2LIP_CHECKPOINT"] = str(save_random_checkpoint(tmp_path / "w2l" / "random.pth", 3))
    if engine == "musetalk":
        from tests.test_musetalk_models import build_tiny_folder

        env["AVATAR_MUSETALK_DIR"] = build_tiny_folder(str(tmp_path / "musetalk"))
    return env


async def _upload_and_follow(url: str, path: Path) -> tuple[str, list[tuple[str, float]], dict]:
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", path.read_bytes(), filename="x", content_type="application/octet-stream")
        async with http.post(f"{url}/api/avatars", data=form) as r:
            assert r.status == 202, await r.text()
            avatar = (await r.json())["id"]
        seen: list[tuple[str, float]] = []
        for _ in range(3000):
            async with http.get(f"{url}/api/avatars/{avatar}") as r:
                status = await r.json()
            seen.append((status.get("step", ""), status["progress"]))
            if status["status"] != "preparing":
                break
            await asyncio.sleep(0.02)
        async with http.get(f"{url}/api/avatars") as r:
            listed = {a["id"]: a["status"] for a in (await r.json())["avatars"]}
        assert listed.get(avatar) == "ready"
        # A session on the new face: lip-sync loads it from the store (no second preparation).
        ws = await http.ws_connect(f"{url}/ws")
        await ws.send_json({"type": "hello", "version": 1, "avatar": avatar})
        while True:
            event = json.loads((await ws.receive(timeout=10)).data)
            if event["type"] == "config":
                assert event["avatar"] == avatar
                break
        await asyncio.sleep(1.0)
        await ws.close()
        return avatar, seen, status


@pytest.mark.parametrize("engine", ["animation", "wav2lip", "musetalk"])
def test_the_upload_job_runs_the_engines_own_preparation(engine, tmp_path):
    if engine == "animation":
        source = write_photo(tmp_path / "me.jpg", my_face())
    else:  # a short video: a step over several loop frames
        source = write_video(tmp_path / "me.mp4", 1.2, (640, 360), codec="mpeg4")
    with ServiceStack(_engine_env(engine, tmp_path)) as stack:
        stack.start("lipsync", "gateway")
        stack.wait_ready("lipsync", "gateway")
        avatar, seen, status = asyncio.run(_upload_and_follow(stack.url, source))
        gateway_log, lipsync_log = "\n".join(stack.services["gateway"].lines), "\n".join(stack.services["lipsync"].lines)
    assert status["status"] == "ready", (status, lipsync_log[-3000:])
    progress = [p for _s, p in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    entry = tmp_path / "cache" / "avatars" / avatar
    steps = sorted(p.name for p in entry.glob(f"{engine}-*.npz"))
    if engine == "animation":
        # The photo animation's step (its face animators) is built from the store's geometry.
        assert steps == [] and (entry / "geometry.json").is_file()
    else:
        assert len(steps) == 1, sorted(p.name for p in entry.iterdir())
        # Built once, by the lip-sync stage, before the job said "ready"; the session's load
        # then took it from the store entry.
        assert lipsync_log.count(f"avatar {avatar}: {steps[0][:-4]} prepared in") == 1, lipsync_log[-3000:]
        assert f"avatar {avatar}: {steps[0][:-4]} from the store" in lipsync_log, lipsync_log[-3000:]
        assert "prepared in" not in gateway_log  # the gateway loads no engine model
    assert f"avatar {avatar} loaded for lip-sync" in lipsync_log
    assert "Traceback" not in gateway_log + lipsync_log
