"""Questions on their way to the LLM, sent without ever making a shared loop wait.

The gateway's event loop and its pages' handlers serve every session, so none of them may await
the LLM's socket: while the LLM is down, loading its model (it binds its inbox only once loaded:
minutes for a 7B model on a GPU box) or full, that await would hold every other session's speech
onsets, transcripts and barge-ins behind it. Instead each question goes into this outbox and an
owned task sends it.

Invariants:
- One slot per session: a newer question replaces that session's older unsent one (the user has
  moved on; only the latest is worth an answer), so the backlog is bounded by the sessions.
- A question whose turn has moved on (barge-in, Stop, the session closed) is dropped, never sent:
  a stage that was down missed the Interrupt that would have told it so.
- While a session's question waits, its page is told why ("thinking is starting up" before the
  LLM was ever reached, "thinking is retrying" after); once the question goes, the page is told
  that too. When the LLM comes back, each session's latest question is sent once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from services import messages
from services.gateway.session import Session
from services.transport import Sender

logger = logging.getLogger(__name__)

STARTING = "thinking is starting up"
RETRYING = "thinking is retrying"
# How often to try again when the socket gives no sign (it normally wakes the task at once when
# the LLM connects or its queue drains).
_RETRY_S = 1.0


class LlmOutbox:
    def __init__(self, sender: Sender, sessions: Mapping[str, Session]) -> None:
        self._sender = sender
        self._sessions = sessions
        self._pending: dict[str, messages.UserText] = {}
        # Sessions whose page was told its question waits (and with which words).
        self._told: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._reached = False  # any question got through since the gateway started
        self._blocked = False  # the socket refused the last try

    def ask(self, msg: messages.UserText) -> None:
        """Queue ``msg`` for sending; returns at once."""
        older = self._pending.pop(msg.session, None)
        if older is not None:
            logger.info("Session(%s) question of turn %d replaced by turn %d before the llm took it",
                        msg.session, older.turn, msg.turn)
        self._pending[msg.session] = msg
        if self._blocked:
            self._tell_waiting()  # now, not when the socket next wakes the sender
        self._wake.set()

    def waiting(self) -> dict[str, int]:
        """Each session's unsent question, by turn (for tests and benchmarks)."""
        return {sid: msg.turn for sid, msg in self._pending.items()}

    async def run(self) -> None:
        """Send what is queued, in the order it was asked; until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                self._blocked = not self._flush()
                if not self._blocked:
                    break
                self._tell_waiting()
                # Awakened by the socket (the LLM connected, or took messages), or a new question.
                await self._sender.wait_writable(_RETRY_S)

    def _flush(self) -> bool:
        """Send every current question; False as soon as the socket refuses one."""
        for sid in list(self._pending):
            msg = self._pending[sid]
            session = self._sessions.get(sid)
            if session is None or session.turn != msg.turn:
                del self._pending[sid]
                self._untell(sid, session)
                continue
            if not self._sender.try_send(msg):
                return False
            del self._pending[sid]
            self._reached = True
            self._untell(sid, session)
        return True

    def _tell_waiting(self) -> None:
        words = RETRYING if self._reached else STARTING
        for sid in self._pending:
            session = self._sessions.get(sid)
            if session is not None and self._told.get(sid) != words:
                self._told[sid] = words
                logger.info("Session(%s) question waits: %s", sid, words)
                session.send({"type": "waiting", "stage": "llm", "message": words})

    def _untell(self, sid: str, session: Session | None) -> None:
        if self._told.pop(sid, None) is not None and session is not None:
            session.send({"type": "waiting", "stage": "llm", "message": ""})
