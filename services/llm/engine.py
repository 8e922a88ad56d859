"""The language-model engine interface.

``stream`` is a blocking generator run in a worker thread. It must check ``should_stop``
between tokens (every decode step of the transformers engine's batch, a closed HTTP stream for a
server) so that a barge-in stops generation within a token or two. Engines serve many sessions
at once: ``stream`` may be called from several threads concurrently and no call waits for
another's answer. ``close`` releases what the engine owns (threads, connections).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from services.config_errors import ConfigurationError

ChatMessage = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


class LlmEngine(Protocol):
    name: str

    def stream(
        self,
        messages: list[ChatMessage],
        should_stop: Callable[[], bool],
        max_new_tokens: int | None = None,
    ) -> Iterator[str]:
        """Yield pieces of the answer as they are generated."""

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Prompt length in tokens, used to trim history to the context window."""

    @property
    def context_tokens(self) -> int: ...

    def close(self) -> None:
        """Stop what the engine owns; later streams fail."""


class LlmModelMissing(ConfigurationError, RuntimeError):
    """The configured model is not on disk; the message names it and the fetch command."""
