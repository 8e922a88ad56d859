"""Many requests decoding together on one model: no session waits for another's answer.

One owned thread runs the model; nothing else calls it. Each loop it

1. drops the rows that finished, were cancelled, or whose ``should_stop()`` says the turn is
   stale, so a stale request leaves within one step and its slot is free at once;
2. admits waiting requests (FIFO, up to ``max_batch`` active): prefills each one's prompt on
   a private copy of the longest cached prefix of its prompt (prefix_cache.py: the system
   prompt, or the conversation's previous prompt), which also gives its first token, and appends
   its cache as a new row of the batch. All waiting requests are admitted in the same loop:
   a newcomer's first token matters more than a pause of a prefill or two in answers already
   streaming, which run far ahead of speech anyway. Requests admitted together share their
   forwards (**joint admission**): on the CPU a forward costs about what reading the weights
   costs, whatever the rows, so three sessions asking at once paid three prefills in a row
   before the last one's first token (a 12-token prefill of SmolLM2 is ~150-300 ms on one
   core here, against ~30 ms for one token). Now

   - a request whose prompt is cached but for its last token joins the batch as a plain row
     fed that token: its first token comes from the next decode step, with everyone else's;
   - the others are prefilled in one forward, each row fed the same number of tokens: a row
     with a shorter uncached tail is fed a few already cached tokens again (at most
     ``_MAX_RECOMPUTED_TOKENS`` in all per forward, else a separate forward);
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
from transformers import DynamicCache

from services.llm.kv_batch import KvBatch, left_pad
from services.llm.prefix_cache import PrefixCache
from services.llm.sampling import Sampler
from services.malloc_trim import trim_heap

logger = logging.getLogger(__name__)

# The gateway admits 8 sessions by default (AVATAR_MAX_SESSIONS), each with one answer at a
# time, so 16 leaves room for an interrupted answer still leaving while its successor joins.
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAITING = 64
# Joint admission: cached tokens fed again, in all, so that rows share one prefill forward.
# A few tokens cost little next to a second pass over the weights (~30 ms a forward here).
_MAX_RECOMPUTED_TOKENS = 32
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


@dataclass(eq=False, slots=True)
class _Joiner:
    """A request being admitted, with its private cache of the first ``cached`` prompt ids."""

    request: _Request
    cache: DynamicCache
    cached: int

    @property
    def tail(self) -> int:
        """Prompt ids the cache does not hold yet."""
        return len(self.request.prompt_ids) - self.cached


def prefill_groups(joiners: list[_Joiner], max_recomputed: int = _MAX_RECOMPUTED_TOKENS) -> list[list[_Joiner]]:
    """Joiners in groups that share one prefill forward: each row of a group is fed as many
    ids as the group's longest tail, so a shorter tail costs cached ids fed again. Longest
    tails first; a joiner that would push its group past ``max_recomputed`` such ids, or whose
    whole prompt is shorter than that feed, starts a new group."""
    groups: list[list[_Joiner]] = []
    for joiner in sorted(joiners, key=lambda j: -j.tail):
        if groups:
            group = groups[-1]
            feed = group[0].tail
            recomputed = sum(feed - j.tail for j in group) + feed - joiner.tail
            if recomputed <= max_recomputed and len(joiner.request.prompt_ids) >= feed:
                group.append(joiner)
                continue
        groups.append([joiner])
    return groups


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
        joint: bool = True,
    ) -> None:
        """``joint``: requests admitted together share forwards (the module docstring)."""
        self._model = model
        self._joint = joint
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
                    self._admit(joining)
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

    def _admit(self, joining: list[_Request]) -> None:
        """Prefill the requests joining now, sharing forwards where their prompts allow."""
        joiners: list[_Joiner] = []
        for request in joining:
            if self._stale(request):
                request.finish()
                continue
            try:
                cache, cached = self.prefix.start(request.prompt_ids, request.prefix_len)
            except Exception as exc:
                logger.exception("BatchedDecoder(req %d): prefill failed", request.id)
                request.finish(_Failed(exc))
                continue
            joiners.append(_Joiner(request, cache, cached))
        if not self._joint:
            for joiner in joiners:
                self._prefill([joiner])
            return
        rest = []
        for joiner in joiners:
            if joiner.tail == 1 and joiner.cached > 0:
                self._join_as_row(joiner)
            else:
                rest.append(joiner)
        for group in prefill_groups(rest):
            self._prefill(group)

    def _join_as_row(self, joiner: _Joiner) -> None:
        """A prompt cached but for its last id joins as a row fed that id at the next step: the
        step's forward gives its first token, and no forward is spent on it alone."""
        request = joiner.request
        try:
            self._batch.add(joiner.cache, joiner.cached)
            request.seen = self._prompt_seen(request)
        except Exception as exc:
            logger.exception("BatchedDecoder(req %d): joining the batch failed", request.id)
            request.finish(_Failed(exc))
            return
        request.last_token = request.prompt_ids[-1]
        self._active.append(request)
        logger.info("BatchedDecoder(req %d): joined the batch with %d prompt tokens cached, %.0f ms after "
                    "submit; batch of %d", request.id, joiner.cached,
                    (time.monotonic() - request.submitted) * 1000, len(self._active))

    def _prompt_seen(self, request: _Request) -> torch.Tensor:
        """[V] bool: the tokens the repetition penalty counts before the answer's first."""
        vocab = int(self._model.config.vocab_size)
        seen = torch.zeros(vocab, dtype=torch.bool, device=self._model.device)
        if self._sampler.sampling.penalize_prompt:
            seen[torch.tensor(request.prompt_ids, device=seen.device)] = True
        return seen

    def _prefill(self, group: list[_Joiner]) -> None:
        """One forward over ``group``'s prompts, each row fed its last ``feed`` ids (its own
        uncached tail, the longest in the group, plus cached ids again where shorter)."""
        started = time.monotonic()
        feed = group[0].tail
        try:
            device = self._model.device
            if len(group) == 1:
                cache, mask = group[0].cache, None
                out = self._model(
                    input_ids=torch.tensor([group[0].request.prompt_ids[-feed:]], device=device),
                    cache=cache, use_cache=True, logits_to_keep=1,
                )
            else:
                cache, mask, kept = self._padded_cache(group, feed)
                mask = torch.cat([mask, torch.ones((len(group), feed), dtype=torch.long, device=device)], dim=1)
                out = self._model(
                    input_ids=torch.tensor([j.request.prompt_ids[-feed:] for j in group], device=device),
                    attention_mask=mask,
                    position_ids=torch.tensor(kept, device=device).unsqueeze(1) + torch.arange(feed, device=device),
                    cache=cache, use_cache=True, logits_to_keep=1,
                )
            seen = torch.stack([self._prompt_seen(j.request) for j in group])
            tokens = self._sampler.pick(out.logits[:, -1, :], seen).tolist()
            self._remember(group, out.cache)
            if mask is None:
                self._batch.add(out.cache, len(group[0].request.prompt_ids))
            else:
                self._batch.add_rows(out.cache, mask)
        except Exception as exc:
            logger.exception("BatchedDecoder(req %s): prefill failed", ",".join(str(j.request.id) for j in group))
            for joiner in group:
                joiner.request.finish(_Failed(exc))
            return
        now = time.monotonic()
        for row, joiner in enumerate(group):
            joiner.request.seen = seen[row].clone()
            joiner.request.first_token_at = now
            self._active.append(joiner.request)
        logger.info(
            "BatchedDecoder(req %s): %d prefilled in one forward, %s prompt tokens (%s cached), %d fed per row, "
            "in %.0f ms, %.0f ms after submit; batch of %d", ",".join(str(j.request.id) for j in group), len(group),
            ",".join(str(len(j.request.prompt_ids)) for j in group), ",".join(str(j.cached) for j in group), feed,
            (now - started) * 1000, (started - min(j.request.submitted for j in group)) * 1000, len(self._active),
        )
        for joiner, token in zip(group, tokens, strict=True):
            self._emit(joiner.request, token)

    def _padded_cache(self, group: list[_Joiner], feed: int) -> tuple[DynamicCache, torch.Tensor, list[int]]:
        """The group's cached prefixes as one left-padded cache: row r keeps the first
        ``len(prompt) - feed`` ids of its cache. Returns it, its mask [B, W] and those lengths."""
        kept = [len(j.request.prompt_ids) - feed for j in group]
        width = max(kept)
        device = self._model.device
        mask = torch.zeros((len(group), width), dtype=torch.long, device=device)
        for row, n in enumerate(kept):
            mask[row, width - n:] = 1
        cache = DynamicCache(config=self._model.config)
        if width == 0:
            return cache, mask, kept
        source = next(j for j, n in zip(group, kept, strict=True) if n > 0)
        for index, layer in enumerate(source.cache.layers):
            shape = (1, layer.keys.shape[1], 0, layer.keys.shape[3])
            keys, values = [], []
            for joiner, n in zip(group, kept, strict=True):
                mine = joiner.cache.layers[index] if n > 0 else None
                k = mine.keys[..., :n, :] if mine is not None else layer.keys.new_zeros(shape)
                v = mine.values[..., :n, :] if mine is not None else layer.values.new_zeros(shape)
                keys.append(left_pad(k, width))
                values.append(left_pad(v, width))
            cache.update(torch.cat(keys), torch.cat(values), index)
        return cache, mask, kept

    def _remember(self, group: list[_Joiner], cache: DynamicCache) -> None:
        """The next turn of each conversation begins with its whole prompt: keep each row's."""
        if len(group) == 1:
            self.prefix.remember(group[0].request.prompt_ids, cache)
            return
        width = cache.layers[0].keys.shape[-2]
        for row, joiner in enumerate(group):
            n = len(joiner.request.prompt_ids)
            one = DynamicCache(config=self._model.config)
            for index, layer in enumerate(cache.layers):
                # A copy: the batch's tensor holds every row, and an entry lives for turns.
                one.update(layer.keys[row:row + 1, :, width - n:, :].clone(),
                           layer.values[row:row + 1, :, width - n:, :].clone(), index)
            self.prefix.remember(joiner.request.prompt_ids, one)

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
        if request.generated == 0 and not request.first_token_at:
            request.first_token_at = time.monotonic()  # a row that joined without a prefill
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
