"""The language-model engine interface.

``stream`` is a blocking generator run in a worker thread. It must check ``should_stop``
between tokens (a StoppingCriteria for transformers, a closed HTTP stream for a server) so that
a barge-in stops generation within a token or two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

ChatMessage = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


class LlmEngine(Protocol):
    name: str

    def stream(
        self, messages: list[ChatMessage], should_stop: Callable[[], bool]
    ) -> Iterator[str]:
        """Yield pieces of the answer as they are generated."""

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Prompt length in tokens, used to trim history to the context window."""

    @property
    def context_tokens(self) -> int: ...


class LlmModelMissing(RuntimeError):
    """The configured model is not on disk; the message names it and the fetch command."""
