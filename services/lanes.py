"""Per-session work lanes: one owned worker task per session, fed by a bounded queue.

Sessions never wait on each other's work, and messages of one session stay in order.
``interrupt`` cancels the work in flight and drops what is queued (barge-in); ``aclose``
cancels everything with a timeout. Nothing here is fire-and-forget.
"""

from __future__ import annotations

import asyncio
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

    async def put(self, session: str, item: T) -> None:
        await self._lane(session).put(item)

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
