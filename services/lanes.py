"""Per-session work lanes: one owned worker task per session, fed by a bounded queue.

Sessions never wait on each other's work, and messages of one session stay in order.
``offer`` hands an item over without waiting, so the stage's shared inbox never waits on one
session's lane. ``interrupt`` cancels the work in flight and drops what is queued (barge-in);
``aclose`` cancels everything with a timeout. Nothing here is fire-and-forget.
``SessionThreads`` gives each session its own worker thread for its blocking calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SessionLanes(Generic[T]):
    def __init__(self, name: str, handler: Callable[[T], Awaitable[None]], maxsize: int) -> None:
        self._name = name
        self._handler = handler
        self._maxsize = maxsize
        self._queues: dict[str, asyncio.Queue[T]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _lane(self, session: str) -> asyncio.Queue[T]:
        queue = self._queues.get(session)
        if queue is None:
            queue = asyncio.Queue(maxsize=self._maxsize)
            self._queues[session] = queue
            self._tasks[session] = asyncio.create_task(
                self._work(session, queue), name=f"{self._name}-{session}"
            )
        return queue

    def offer(self, session: str, item: T) -> T | None:
        """Queue ``item`` without waiting. When the session's lane is full, its oldest queued
        item makes room and is returned (the caller says what was lost); otherwise None."""
        queue = self._lane(session)
        dropped = None
        if queue.full():
            dropped = queue.get_nowait()
        queue.put_nowait(item)
        return dropped

    async def _work(self, session: str, queue: asyncio.Queue[T]) -> None:
        while True:
            item = await queue.get()
            try:
                await self._handler(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One bad item must not kill the session's lane; the handler reports errors
                # to the client itself, this is the last line of defence.
                logger.exception("%s lane of session %s failed on an item", self._name, session)

    def drain(self, session: str) -> list[T]:
        """Take everything queued for ``session`` now, without waiting.

        For handlers whose cost is mostly per call (a thread hop) rather than per item: on a
        busy machine each hop can cost a scheduler slice, and a lane that pays that for every
        20 ms of audio falls behind real time and never catches up.
        """
        queue = self._queues.get(session)
        items: list[T] = []
        while queue is not None and not queue.empty():
            items.append(queue.get_nowait())
        return items

    def interrupt(self, session: str) -> None:
        """Cancel the item in progress and drop the queued ones; the lane restarts empty."""
        task = self._tasks.pop(session, None)
        self._queues.pop(session, None)
        if task is not None:
            task.cancel()

    def close(self, session: str) -> None:
        self.interrupt(session)

    def sessions(self) -> list[str]:
        return list(self._tasks)

    async def aclose(self, timeout_s: float = 2.0) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._queues.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout_s)


class SessionThreads:
    """One worker thread per session for its blocking calls.

    A shared pool lets one session's long call (a Whisper decode of a whole utterance) hold a
    thread that another session's short calls (VAD windows that drive its barge-in) then queue
    behind; with a thread each, the OS shares the cores between them instead. One thread per
    session also keeps that session's calls in order.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._threads: dict[str, concurrent.futures.ThreadPoolExecutor] = {}

    def get(self, session: str) -> concurrent.futures.ThreadPoolExecutor:
        pool = self._threads.get(session)
        if pool is None:
            pool = self._threads[session] = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"{self._name}-{session[:8]}"
            )
        return pool

    def close(self, session: str, last: Callable[[], object] | None = None) -> None:
        """Retire the session's thread after ``last`` (run on it, after what is queued there)."""
        pool = self._threads.pop(session, None)
        if pool is not None:
            if last is not None:
                pool.submit(last)
            pool.shutdown(wait=False)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pools = list(self._threads.values())
        self._threads.clear()
        for pool in pools:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


async def iterate_in_thread(
    loop: asyncio.AbstractEventLoop, executor: Any, iterator: Any, should_stop: Callable[[], bool]
):
    """Step a blocking iterator in ``executor``, one item per hop, stopping when told.

    The worker never runs more than one step ahead, so a stale turn costs at most one step.
    """
    sentinel = object()
    while not should_stop():
        item = await loop.run_in_executor(executor, next, iterator, sentinel)
        if item is sentinel:
            return
        yield item
