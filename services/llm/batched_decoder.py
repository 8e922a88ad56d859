"""Many requests decoding together on one model: no session waits for another's answer.

One owned thread runs the model; nothing else calls it. Each loop it

1. drops the rows that finished, were cancelled, or whose ``should_stop()`` says the turn is
   stale, so a stale request leaves within one step and its slot is free at once;
2. admits waiting requests (FIFO, up to ``max_batch`` active): prefills each one's prompt on
   a private copy of the longest cached prefix of its prompt (prefix_cache.py: the system
   prompt, or the conversation's previous prompt), which also gives its first token, and appends
   its cache as a new row of the batch. All waiting requests are admitted in the same loop:
   a newcomer's first token matters more than a pause of a prefill or two in answers already
   streaming, which run far ahead of speech anyway;
3. runs one decode step: a single forward over all B rows (see kv_batch.py), one new token
   for every row, so no active request is starved.

**Pacing** (optional, ``Pace``): a spoken answer is heard at about 3-4 tokens a second, and the
model writes tens a second. Once every active request is ``lead_tokens`` ahead and within
``tokens_per_s`` of its first token, the thread rests instead of stepping, until a request
falls due or a new one arrives. The answer text stays seconds ahead of the voice, and the
core the decoder would have spun on goes to what is late: other sessions' first clauses in
TTS, the ASR's decodes, the video. Measured on 2 cores with 3 sessions asking at once, the
decoder otherwise kept a core busy for 2 s after every first clause was out, exactly while TTS
synthesized those clauses. A new request is admitted at once, never paced: its first token is
what a listener is waiting for.

A request's end (end-of-turn token, token budget, stop, failure) reaches its reader at once;
its row leaves the batch at the next loop.

Tokens reach the caller through a per-request queue sized to the request's token budget, so
the decode thread never blocks on a slow reader.

Errors::

    DecoderError          raised by submit() or while iterating a TokenStream; an exception
                          from the model (or from should_stop) is its __cause__, raised in
                          the reader of every request it hit
      DecoderBusy         too many requests are already waiting for a batch slot
      DecoderClosed       the decoder was closed before or while the request ran
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from services.llm.kv_batch import KvBatch
from services.llm.prefix_cache import PrefixCache
from services.llm.sampling import Sampler
from services.malloc_trim import trim_heap

logger = logging.getLogger(__name__)

# The gateway admits 8 sessions by default (AVATAR_MAX_SESSIONS), each with one answer at a
# time, so 16 leaves room for an interrupted answer still leaving while its successor joins.
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAITING = 64
# Longest rest between checks of the requests' should_stop() (a barge-in is seen this soon).
_MAX_REST_S = 0.1


@dataclass(frozen=True, slots=True)
class Pace:
    """How far ahead of its first token a request must be for the decoder to rest."""

    lead_tokens: int = 24  # about the first two clauses (tts splits at ~5 and ~10 words)
    tokens_per_s: float = 8.0  # twice a fast speaker's rate: the text never falls behind the voice

    def due(self, generated: int, first_token_at: float) -> float:
        """When (monotonic) a request with ``generated`` tokens wants its next one."""
        if generated < self.lead_tokens:
            return float("-inf")
        return first_token_at + (generated - self.lead_tokens) / self.tokens_per_s


class DecoderError(RuntimeError):
    """The batched decoder could not serve a request."""


class DecoderBusy(DecoderError):
    """Too many requests are waiting for a batch slot."""


class DecoderClosed(DecoderError):
    """The decoder was closed."""


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


_FINISHED = object()  # the terminal item of a request that ended normally


@dataclass(eq=False, slots=True)
class _Request:
    prompt_ids: list[int]
    prefix_len: int
    max_new_tokens: int
    should_stop: Callable[[], bool]
    id: int
    submitted: float = field(default_factory=time.monotonic)
    # Written by the reader's thread, read by the decode thread; a bool store is atomic.
    cancelled: bool = False
    # Decode thread only from here on.
    generated: int = 0
    first_token_at: float = 0.0
    last_token: int = -1
    done: bool = False
    seen: torch.Tensor | None = None  # [V] bool: tokens of the prompt and answer so far
    out: queue.Queue[object] = field(init=False)

    def __post_init__(self) -> None:
        # At most max_new_tokens tokens and one terminal item ever go in: put never blocks.
        self.out = queue.Queue(maxsize=self.max_new_tokens + 1)

    def finish(self, item: object = _FINISHED) -> None:
        if not self.done:
            self.done = True
            self.out.put_nowait(item)


class TokenStream:
    """The reader's side of one request: iterate token ids; ``cancel`` to leave early."""

    def __init__(self, decoder: "BatchedDecoder", request: _Request) -> None:
        self._decoder = decoder
        self._request = request

    def __iter__(self) -> Iterator[int]:
        while True:
            item = self._request.out.get()
            if item is _FINISHED:
                return
            if isinstance(item, _Failed):
                # A fresh exception per reader: one failure may reach many readers' threads.
                if isinstance(item.error, DecoderError):
                    raise type(item.error)(*item.error.args)
                raise DecoderError(f"LLM decoding failed: {item.error!r}") from item.error
            yield item  # type: ignore[misc]

    def cancel(self) -> None:
        """Leave the batch at the next step (or the queue at once). Safe to call twice."""
        self._decoder._cancel(self._request)


class BatchedDecoder:
    def __init__(
        self,
        model: torch.nn.Module,
        eos_token_ids: frozenset[int],
        sampler: Sampler,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_waiting: int = DEFAULT_MAX_WAITING,
        pace: Pace | None = None,
    ) -> None:
        self._model = model
        self._pace = pace
        self._eos = eos_token_ids
        self._sampler = sampler
        self._max_batch = max_batch
        self._max_waiting = max_waiting
        self._request_ids = itertools.count(1)  # for log lines
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()  # guarded by _cond
        self._closed = False  # guarded by _cond
        # Decode thread only: the active requests, row i of _batch being _active[i].
        self._active: list[_Request] = []
        self._batch = KvBatch()
        self.prefix = PrefixCache(model)
        self._thread = threading.Thread(target=self._run, name="llm-decode", daemon=True)
        self._thread.start()

    def submit(
        self, prompt_ids: list[int], prefix_len: int, max_new_tokens: int, should_stop: Callable[[], bool]
    ) -> TokenStream:
        """Queue a prompt; ``prompt_ids[:prefix_len]`` is the system prompt (0: none)."""
        if not prompt_ids or max_new_tokens < 1:
            raise ValueError("a request needs at least one prompt token and one new token")
        request = _Request(list(prompt_ids), prefix_len, max_new_tokens, should_stop, next(self._request_ids))
        with self._cond:
            if self._closed:
                raise DecoderClosed("the LLM decoder is closed")
            if len(self._waiting) >= self._max_waiting:
                raise DecoderBusy(f"{len(self._waiting)} LLM requests are already waiting for a batch slot")
            self._waiting.append(request)
            self._cond.notify()
        return TokenStream(self, request)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the decode thread; requests still running or waiting fail with DecoderClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("BatchedDecoder: decode thread still busy %.1f s after close", timeout_s)

    def _cancel(self, request: _Request) -> None:
        request.cancelled = True
        with self._cond:
            if request in self._waiting:
                self._waiting.remove(request)
                request.finish()
            self._cond.notify()  # a resting decode thread drops the row now

    # --- the decode thread ---------------------------------------------------------------

    def _run(self) -> None:
        logger.info("BatchedDecoder: decode thread started (batch of up to %d)", self._max_batch)
        failure: BaseException = DecoderClosed("the LLM decoder is closed")
        try:
            with torch.inference_mode():
                while True:
                    # Dropping first frees the slots of answers that ended in the last step.
                    had_work = bool(self._active)
                    self._drop_finished()
                    if had_work and not self._active and not self._waiting:
                        # Idle now: hand the answers' freed tensors back to the OS, off the
                        # decode path (services/malloc_trim.py: the soak's RSS creep).
                        trim_heap()
                    with self._cond:
                        while not (self._closed or self._waiting or self._active):
                            self._cond.wait()
                        if self._closed:
                            break
                        rest = self._rest_s()
                        if rest > 0 and not self._waiting:
                            self._cond.wait(min(rest, _MAX_REST_S))
                            continue
                        free = self._max_batch - len(self._active)
                        joining = [self._waiting.popleft() for _ in range(min(free, len(self._waiting)))]
                    for request in joining:
                        self._prefill(request)
                    if self._active:
                        self._step()
        except BaseException as exc:  # the thread must not die silently: readers would hang
            logger.exception("BatchedDecoder: decode thread crashed")
            failure = exc
        finally:
            with self._cond:
                self._closed = True
                leftover = self._active + list(self._waiting)
                self._waiting.clear()
            self._active = []
            self._batch = KvBatch()
            for request in leftover:
                request.finish(_Failed(failure))
            logger.info("BatchedDecoder: decode thread stopped")

    def _rest_s(self) -> float:
        """Seconds until the first active request is due for a token (0: step now)."""
        if self._pace is None or not self._active:
            return 0.0
        due = min(self._pace.due(r.generated, r.first_token_at) for r in self._active)
        return max(0.0, due - time.monotonic())

    def _stale(self, request: _Request) -> bool:
        if request.done or request.cancelled:
            return True
        try:
            return bool(request.should_stop())
        except Exception as exc:
            request.finish(_Failed(exc))
            return True

    def _prefill(self, request: _Request) -> None:
        if self._stale(request):
            request.finish()
            return
        started = time.monotonic()
        try:
            cache, start = self.prefix.start(request.prompt_ids, request.prefix_len)
            device = self._model.device
            out = self._model(
                input_ids=torch.tensor([request.prompt_ids[start:]], device=device),
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1, :]
            seen = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            if self._sampler.sampling.penalize_prompt:
                seen[torch.tensor(request.prompt_ids, device=logits.device)] = True
            token = int(self._sampler.pick(logits, seen.unsqueeze(0))[0])
            # The next turn of this conversation begins with this whole prompt.
            self.prefix.remember(request.prompt_ids, out.cache)
            self._batch.add(out.cache, len(request.prompt_ids))
        except Exception as exc:
            logger.exception("BatchedDecoder(req %d): prefill failed", request.id)
            request.finish(_Failed(exc))
            return
        request.seen = seen
        request.first_token_at = time.monotonic()
        self._active.append(request)
        logger.debug(
            "BatchedDecoder(req %d): %d prompt tokens (%d cached) prefilled in %.0f ms, %.0f ms after "
            "submit; batch of %d", request.id, len(request.prompt_ids), start,
            (time.monotonic() - started) * 1000, (started - request.submitted) * 1000, len(self._active),
        )
        self._emit(request, token)

    def _drop_finished(self) -> None:
        keep: list[int] = []
        for row, request in enumerate(self._active):
            if self._stale(request):
                request.finish()
            else:
                keep.append(row)
        if len(keep) != len(self._active):
            self._batch.keep(keep)
            self._active = [self._active[row] for row in keep]

    def _step(self) -> None:
        rows = self._active
        try:
            logits = self._batch.decode(self._model, [r.last_token for r in rows])
            seen = torch.stack([r.seen for r in rows])  # type: ignore[misc]
            tokens = self._sampler.pick(logits, seen).tolist()
        except Exception as exc:
            # The batch's cache is in an unknown state: every row in it fails, the rest go on.
            logger.exception("BatchedDecoder: decode step of %d rows failed", len(rows))
            for request in rows:
                request.finish(_Failed(exc))
            self._active = []
            self._batch = KvBatch()
            return
        for request, token in zip(rows, tokens, strict=True):
            self._emit(request, token)

    def _emit(self, request: _Request, token: int) -> None:
        if request.done:
            return  # it ended at its prefill or was failed; its row leaves before the next step
        request.generated += 1
        if token in self._eos:
            request.finish()
            return
        request.out.put_nowait(token)
        request.last_token = token
        assert request.seen is not None
        request.seen[token] = True
        if request.generated >= request.max_new_tokens:
            request.finish()
