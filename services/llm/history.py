"""The prompt for one answer: the persona, the conversation so far, the question.

The gateway owns the conversation (services/gateway/conversation.py) and sends it with every
request (``UserText.history``), already holding only what the user actually heard of each
answer. So this stage keeps no conversation state and a restart loses nothing; it only trims
the history to its token budget (AVATAR_LLM_PROMPT_TOKENS, at most the model's context).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from services.llm.engine import ChatMessage

logger = logging.getLogger(__name__)

_ROLES = ("user", "assistant")
_MAX_MESSAGES = 128  # far more than the gateway keeps (32 exchanges); the rest is garbage


def parse_history(raw: str) -> list[ChatMessage]:
    """The gateway's JSON history as chat messages; anything malformed is skipped, not fatal."""
    if not raw:
        return []
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        logger.warning("ignoring a history that is not JSON")
        return []
    if not isinstance(data, list):
        return []
    out: list[ChatMessage] = []
    for item in data[-_MAX_MESSAGES:]:
        if isinstance(item, dict) and item.get("role") in _ROLES and isinstance(item.get("content"), str):
            out.append({"role": item["role"], "content": item["content"]})
    return out


# History is trimmed whole blocks of this many exchanges at a time, counted from the oldest
# one the gateway sent, so consecutive turns keep the same beginning and the decoder's prefix
# cache serves it (prefix_cache.py): trimming one exchange per turn would change the start of
# every prompt and make each turn prefill its whole history again.
TRIM_STEP = 4


def build_prompt(
    persona: str,
    history: list[ChatMessage],
    question: str,
    count_tokens: Callable[[list[ChatMessage]], int],
    budget: int,
    step: int = TRIM_STEP,
    examples: list[ChatMessage] | None = None,
) -> list[ChatMessage]:
    """System prompt + example exchanges + the recent exchanges that fit in ``budget`` tokens
    + the question.

    Whole exchanges are dropped from the oldest end, so the model never sees an answer without
    the question it answered; ``step`` of them at a time while that leaves something, then one
    at a time. The question itself is always kept.
    """
    # The fixed part: never trimmed, so it stays the cached prefix of every prompt.
    system: list[ChatMessage] = [{"role": "system", "content": persona}, *(examples or ())]
    asked: list[ChatMessage] = [{"role": "user", "content": question}]
    # Group into exchanges: a user message and the assistant messages that follow it.
    exchanges: list[list[ChatMessage]] = []
    for msg in history:
        if msg["role"] == "user" or not exchanges:
            exchanges.append([msg])
        else:
            exchanges[-1].append(msg)

    def prompt(start: int) -> list[ChatMessage]:
        return system + [msg for exchange in exchanges[start:] for msg in exchange] + asked

    # Fewer exchanges never take more tokens, so the first start that fits keeps the most:
    # block boundaries first, then any exchange, and at worst none (the question alone).
    n = len(exchanges)
    starts = [*range(0, n, max(1, step)), *range(n)]
    return next((p for p in map(prompt, starts) if count_tokens(p) <= budget), prompt(n))
