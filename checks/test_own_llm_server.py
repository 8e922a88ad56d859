"""Your own LLM server, for real (issue 27): llama.cpp's OpenAI-compatible server
(``llama-cpp-python[server]``) serving the packaged SmolLM2 GGUF, and the avatar started with
``--llm-url`` against it.

Run OUTSIDE CI: PyPI has no prebuilt llama-cpp-python wheel for this machine, so the server
must be compiled once (``scripts/build_llama_server.sh``, about 30-60 min on 2 busy cores).
This file lives outside ``tests/`` so the default run (and CI) never collects it; it does not
skip: without the server it fails and says how to build it. Run it with::

    AVATAR_LLAMA_SERVER_PYTHON=~/.cache/avatar/llama-server-venv/bin/python \\
        .venv/bin/python -m pytest checks/test_own_llm_server.py -v
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.avatar_process import AvatarProcess, free_port  # noqa: E402
from services.llm.openai_engine import OpenAiEngine  # noqa: E402
from services.llm.transformers_engine import smollm2_gguf_path  # noqa: E402
from tests.rtc_client import RtcClient  # noqa: E402

DEFAULT_PYTHON = Path.home() / ".cache" / "avatar" / "llama-server-venv" / "bin" / "python"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python = Path(os.environ.get("AVATAR_LLAMA_SERVER_PYTHON", str(DEFAULT_PYTHON)))
    if not python.is_file():
        pytest.fail(f"no llama.cpp server Python at {python}: build it once with scripts/build_llama_server.sh "
                    "or set AVATAR_LLAMA_SERVER_PYTHON")
    port = free_port()
    # A file, not a pipe: llama.cpp logs enough at start to fill a pipe nobody reads and block.
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(python), str(ROOT / "scripts" / "llama_server.py"), "--model", str(smollm2_gguf_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--model_alias", "smollm2-135m-gguf"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as reply:
                    json.load(reply)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("llama.cpp server did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_the_engine_streams_from_a_real_server(llama_server: str) -> None:
    engine = OpenAiEngine(llama_server, max_new_tokens=32)
    chat = [{"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"}]
    pieces = list(engine.stream(chat, lambda: False))
    assert len(pieces) > 3, "the answer came in one piece: not streamed"
    assert "Paris" in "".join(pieces)
    assert engine.model_name.startswith("smollm2-135m-gguf @ 127.0.0.1:")
    # Stopping mid-answer closes the stream after the piece at hand.
    stopped: list[str] = []
    for piece in engine.stream(chat, lambda: len(stopped) >= 2):
        stopped.append(piece)
    assert len(stopped) == 2


async def test_the_avatar_answers_with_it_and_barge_in_works(llama_server: str) -> None:
    avatar = AvatarProcess("--llm-url", llama_server)
    try:
        await asyncio.get_running_loop().run_in_executor(None, avatar.wait_ready)
        async with RtcClient(avatar.url) as client:
            await client.wait_event(lambda e: e["type"] == "webrtc" and e["state"] == "connected", 30)
            await client.send({"type": "text", "text": "What is the capital of Japan?"})
            status = await client.wait_event(lambda e: e["type"] == "llm" and e["state"] == "answering", 60)
            assert status["model"].startswith("smollm2-135m-gguf @ 127.0.0.1:")
            first = await client.wait_event(lambda e: e["type"] == "transcript" and e["role"] == "avatar" and e["text"], 60)
            await client.wait_event(lambda e: e["type"] == "transcript" and e["role"] == "avatar" and e["final"], 60)
            answer = " ".join(e["text"] for e in client.events if e["type"] == "transcript" and e["role"] == "avatar" and e.get("turn") == first.get("turn") and e["text"])
            assert "Tokyo" in answer  # what this model says through this server (bench_answers)
            # Barge-in: a long answer, interrupted while the avatar speaks; then a new answer.
            start = len(client.events)
            await client.send({"type": "text", "text": "Tell me a long story about a dragon and a knight."})
            await client.wait_event(lambda e: e["type"] == "state" and e["state"] == "speaking", 60, start=start)
            await client.send({"type": "interrupt"})
            cut = await client.wait_event(lambda e: e["type"] == "interrupted", 10, start=start)
            await client.wait_event(lambda e: e["type"] == "state" and e["state"] == "listening", 10, start=start)
            t_cut = time.monotonic()
            await asyncio.sleep(1.5)
            loud_after = [t for t, peak in client.audio_levels if peak > 500 and t > t_cut + 0.5]
            assert not loud_after, "the avatar went on speaking after the interruption"
            start = len(client.events)
            await client.send({"type": "text", "text": "How many legs does a spider have?"})
            await client.wait_event(lambda e: e["type"] == "transcript" and e["role"] == "avatar" and e["final"], 60, start=start)
            assert cut["turn"] >= 1
    finally:
        avatar.stop()
