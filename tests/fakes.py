"""Fakes shared by the unit tests: engines, senders, and a virtual clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import numpy as np


class RecordingSender:
    """Stands in for a ZeroMQ PUSH socket; keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[object] = []
        self.event = asyncio.Event()

    async def send(self, msg: object) -> None:
        self.sent.append(msg)
        self.event.set()

    def of(self, cls: type) -> list:
        return [m for m in self.sent if isinstance(m, cls)]


class VirtualClock:
    """An injectable clock whose time only moves when the test advances it."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self.t:
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        target = self.t + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self.t = deadline
            if not fut.done():
                fut.set_result(None)
            await asyncio.sleep(0)
        self.t = target
        await asyncio.sleep(0)


class FakeTts:
    name = "fake-tts"

    def __init__(self, samples_per_char: int = 100) -> None:
        self.samples_per_char = samples_per_char
        self.texts: list[str] = []

    def synthesize(self, text: str):
        self.texts.append(text)
        for word in text.split():
            yield np.full(len(word) * self.samples_per_char, 1000, dtype=np.int16)


class FakeLipsync:
    """A lip-sync engine whose frame ``i`` is filled with ``i % 256``; records its batches."""

    name = "fake-lipsync"
    uses_phonemes = False
    frame_size = (8, 8)
    max_batch = 8

    def __init__(self) -> None:
        self.batches: list[list[tuple[object, int]]] = []
        self.contexts: list[tuple[int | None, int | None]] = []  # (len(before), len(after)) per prepare
        self.fail_next = False

    def prepare(self, pcm: np.ndarray, first_index: int, before=None, after=None):
        self.contexts.append((None if before is None else len(before), None if after is None else len(after)))
        return _FakeJob(first_index, -(-len(pcm) // 640))

    def render(self, items) -> list[np.ndarray]:
        self.batches.append(list(items))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("render exploded")
        return [np.full((8, 8, 3), (job.first_index + k) % 256, dtype=np.uint8) for job, k in items]

    def frames(self, pcm: np.ndarray, first_index: int):
        job = self.prepare(pcm, first_index)
        yield from self.render([(job, k) for k in range(job.n_frames)])

    def idle_frame(self, index: int) -> np.ndarray:
        return np.zeros((8, 8, 3), dtype=np.uint8)


class _FakeJob:
    def __init__(self, first_index: int, n_frames: int) -> None:
        self.first_index = first_index
        self.n_frames = n_frames


class FakeLlm:
    name = "fake-llm"
    context_tokens = 1000

    def __init__(self, answer: str = "Hello there, friend. How are you today? Fine.", gate=None) -> None:
        self.answer = answer
        self.gate = gate  # threading.Event to hold generation mid-answer
        self.prompts: list[list[dict]] = []
        self.stopped = False

    def count_tokens(self, messages) -> int:
        return sum(len(m["content"]) // 4 + 1 for m in messages)

    def close(self) -> None:
        pass

    def stream(self, messages, should_stop, max_new_tokens=None):
        self.prompts.append(messages)
        for i, word in enumerate(self.answer.split(" ")):
            if should_stop():
                self.stopped = True
                return
            if self.gate is not None and i == 3:
                self.gate.wait(5)
                if should_stop():
                    self.stopped = True
                    return
            yield word + " "


class MemoryTransport:
    """In-process stand-in for ``services.transport.Transport``: same socket roles, asyncio
    queues instead of ZeroMQ, and every message still goes through encode/decode, so what a
    test sees is what would have crossed the wire."""

    def __init__(self, endpoints, hwm: int = 16) -> None:
        from services import messages

        self.endpoints = endpoints
        self._messages = messages
        self._hwm = hwm
        self._queues: dict[str, asyncio.Queue] = {}
        self._subscribers: dict[str, list[asyncio.Queue]] = {}

    def _queue(self, endpoint: str) -> asyncio.Queue:
        return self._queues.setdefault(endpoint, asyncio.Queue(self._hwm))

    def push(self, endpoint: str, hwm: int | None = None, immediate: bool = False):
        return _MemorySender(self, lambda: [self._queue(endpoint)])

    def pull(self, endpoint: str):
        return _MemoryReceiver(self, self._queue(endpoint))

    def publish(self, endpoint: str):
        return _MemorySender(self, lambda: self._subscribers.get(endpoint, []))

    def subscribe(self, endpoint: str):
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.setdefault(endpoint, []).append(queue)
        return _MemoryReceiver(self, queue)

    def close(self) -> None:
        pass


class _MemorySender:
    def __init__(self, transport: MemoryTransport, targets) -> None:
        self._t = transport
        self._targets = targets

    async def send(self, msg: object) -> None:
        frames = [bytes(f) for f in self._t._messages.encode(msg)]
        for queue in self._targets():
            await queue.put(frames)

    def try_send(self, msg: object) -> bool:
        frames = [bytes(f) for f in self._t._messages.encode(msg)]
        targets = self._targets()
        if any(queue.full() for queue in targets):
            return False
        for queue in targets:
            queue.put_nowait(frames)
        return True

    async def wait_writable(self, timeout_s: float) -> bool:
        # asyncio.Queue has no "not full" event to await; a fake may look again after a while.
        await asyncio.sleep(timeout_s)
        return not any(queue.full() for queue in self._targets())


class _MemoryReceiver:
    def __init__(self, transport: MemoryTransport, queue: asyncio.Queue) -> None:
        self._t = transport
        self._queue = queue

    async def recv(self):
        return self._t._messages.decode(await self._queue.get())

    def pending(self) -> list:
        """Everything waiting, decoded, without blocking (for assertions)."""
        out = []
        while not self._queue.empty():
            out.append(self._t._messages.decode(self._queue.get_nowait()))
        return out
