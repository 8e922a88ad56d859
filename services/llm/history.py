"""Per-session conversation history, trimmed to the model's context window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from services.llm.engine import ChatMessage


@dataclass(slots=True)
class Exchange:
    turn: int
    user: str
    assistant: str = ""
    interrupted: bool = False


@dataclass(slots=True)
class History:
    persona: str
    exchanges: list[Exchange] = field(default_factory=list)
    max_exchanges: int = 32

    def start(self, turn: int, user: str) -> Exchange:
        ex = Exchange(turn, user)
        self.exchanges.append(ex)
        del self.exchanges[: -self.max_exchanges]
        return ex

    def heard_only(self, before_turn: int, heard: str) -> None:
        """Barge-in: the answer older than ``before_turn`` keeps only what the user heard."""
        for ex in reversed(self.exchanges):
            if ex.turn < before_turn:
                if not ex.interrupted:
                    ex.assistant = heard.strip()
                    ex.interrupted = True
                return

    def messages(self, count_tokens: Callable[[list[ChatMessage]], int], budget: int) -> list[ChatMessage]:
        """System prompt + as many recent exchanges as fit in ``budget`` tokens.

        The newest exchange (the question being answered) is always kept.
        """
        system: list[ChatMessage] = [{"role": "system", "content": self.persona}]
        kept: list[ChatMessage] = []
        for i, ex in enumerate(reversed(self.exchanges)):
            msgs: list[ChatMessage] = [{"role": "user", "content": ex.user}]
            if ex.assistant and i > 0:
                text = ex.assistant + (" ..." if ex.interrupted else "")
                msgs.append({"role": "assistant", "content": text})
            candidate = msgs + kept
            if i > 0 and count_tokens(system + candidate) > budget:
                break
            kept = candidate
        return system + kept
