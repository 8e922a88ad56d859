"""Avatar preparations running for the gateway, each a child process with progress.

The child (``python -m services.avatar.prepare``) prints JSON lines; its last line is the
result. It runs at a lower CPU priority than the gateway, so the calls in progress keep their
frame rate, and a hostile file that crashes a decoder only ends the child: the person gets a
clear error and the gateway stays healthy. A job past ``timeout_s`` is killed.

Then the configured lip-sync engine's own preparation of the avatar (``engine_step``: asked of
the lip-sync stage, services/gateway/engine_prep.py) runs in the same job: the bar covers both
(the store's part up to ``STORE_SHARE``, the engine's the rest), and the avatar is "ready" only
when a session on it can talk at once. An engine that cannot prepare it (no face for its
detector) fails the job, and the store entry is removed again: nothing half-usable stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.avatar.store import AvatarInfo
from services.gateway.engine_prep import EngineStepFailed, Report

logger = logging.getLogger(__name__)

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEEP_FAILED_S = 600.0
STORE_SHARE = 0.7  # of the progress bar, when an engine step follows

EngineStep = Callable[[str, Report], Awaitable[bool]]  # avatar id, progress -> done (False: not asked)


@dataclass(slots=True)
class Job:
    id: str  # the avatar's id (content hash)
    name: str
    address: str
    state: str = "preparing"  # preparing | ready | failed
    step: str = "queued"
    progress: float = 0.0
    code: str = ""
    message: str = ""
    avatar: AvatarInfo | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float = 0.0
    task: asyncio.Task[None] | None = None

    def to_json(self) -> dict:
        out = {"id": self.id, "name": self.name, "status": self.state, "step": self.step,
               "progress": round(self.progress, 3)}
        if self.state == "failed":
            out["error"] = {"code": self.code, "message": self.message}
        if self.avatar is not None:
            out.update(self.avatar.to_json())
            out["status"] = self.state
        return out


class AvatarJobs:
    def __init__(self, cache_dir: str, timeout_s: float = 180.0, max_running: int = 2,
                 engine_step: EngineStep | None = None, discard: Callable[[str], None] | None = None) -> None:
        self._cache_dir = cache_dir
        self._engine_step = engine_step
        self._discard = discard or (lambda avatar_id: None)
        self._share = STORE_SHARE if engine_step is not None else 1.0
        self._timeout_s = timeout_s
        self.jobs: dict[str, Job] = {}
        self._slots = asyncio.Semaphore(max_running)

    def running(self, address: str | None = None) -> int:
        return sum(1 for j in self.jobs.values() if j.state == "preparing" and (address is None or j.address == address))

    def get(self, avatar_id: str) -> Job | None:
        self._forget_old()
        return self.jobs.get(avatar_id)

    def start(self, job: Job, source: str) -> Job:
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, source), name=f"avatar-prepare-{job.id}")
        return job

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key in [k for k, j in self.jobs.items() if j.state != "preparing" and now - j.ended > KEEP_FAILED_S]:
            del self.jobs[key]

    async def _run(self, job: Job, source: str) -> None:
        try:
            async with self._slots:
                job.step = "starting"
                await asyncio.wait_for(self._prepare(job, source), self._timeout_s)
        except asyncio.TimeoutError:
            self._fail(job, "too_slow", f"preparing took longer than {self._timeout_s:.0f} s; use a shorter or smaller file")
            if job.avatar is not None:
                self._discard(job.id)
        except Exception:
            logger.exception("avatar job %s failed", job.id)
            self._fail(job, "failed", "the file could not be prepared")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(source)
            if job.state == "preparing":
                self._fail(job, "failed", "the preparation stopped without a result")
            job.ended = time.monotonic()

    async def _prepare(self, job: Job, source: str) -> None:
        await self._child(job, source)
        if job.state != "preparing" or job.avatar is None:
            return
        if self._engine_step is not None:
            job.step, job.progress = "the lip-sync engine's preparation", self._share

            def report(step: str, fraction: float) -> None:
                job.step = step
                job.progress = self._share + (1.0 - self._share) * min(1.0, max(0.0, fraction))

            try:
                await self._engine_step(job.id, report)
            except EngineStepFailed as exc:
                self._discard(job.id)
                self._fail(job, "engine_failed", str(exc))
                return
        job.state, job.step, job.progress = "ready", "ready", 1.0

    async def _child(self, job: Job, source: str) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.avatar.prepare", "--cache-dir", self._cache_dir,
             "--source", source, "--name", job.name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=_REPO, preexec_fn=_lower_priority,
        )
        try:
            # A thread reads the child's lines (blocking pipes; no event-loop child watcher).
            code, err = await asyncio.to_thread(self._follow, job, proc)
        finally:
            if proc.poll() is None:
                proc.kill()  # timed out or the gateway is stopping: the reading thread then ends
            await asyncio.to_thread(proc.wait)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if err:
            logger.info("avatar job %s: %s", job.id, err[-2000:])
        if job.state == "preparing" and job.avatar is None:
            # Killed by a signal (a decoder crash, out of memory): clear words, never its trace.
            self._fail(job, "failed", f"the file could not be prepared (the preparing process ended with {code}); "
                                      "is it a damaged or unusual file?")

    def _follow(self, job: Job, proc: subprocess.Popen) -> tuple[int, str]:
        """Worker thread: progress and the result from the child's JSON lines."""
        assert proc.stdout is not None and proc.stderr is not None
        for raw in proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(line, dict):
                continue
            if "ok" not in line:
                job.step, job.progress = str(line.get("step", "")), self._share * float(line.get("progress", 0.0))
            elif line["ok"]:
                job.avatar = AvatarInfo.from_json(line["avatar"])
                job.progress = self._share  # "ready" once the engine's own step is done too
            else:
                self._fail(job, str(line.get("code", "failed")), str(line.get("message", "")))
        err = proc.stderr.read().decode(errors="replace").strip()
        # Closed here, by the thread that read them: a job cancelled meanwhile has stopped waiting.
        proc.stdout.close()
        proc.stderr.close()
        return proc.wait(), err

    @staticmethod
    def _fail(job: Job, code: str, message: str) -> None:
        job.state, job.code, job.message = "failed", code, message
        job.ended = time.monotonic()
        logger.info("avatar %s refused: %s (%s)", job.id, message, code)

    async def aclose(self) -> None:
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _lower_priority() -> None:
    os.nice(10)
