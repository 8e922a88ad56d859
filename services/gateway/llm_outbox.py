"""Questions on their way to the LLM: a stage outbox (stage_outbox.py) with the LLM's policy.

- The latest question wins: one slot per session (``LATEST_ONLY``), so a newer question replaces
  that session's older unsent one and the backlog is bounded by the sessions.
- A question whose turn has moved on (barge-in, Stop, the session closed) is dropped, never sent.
- While a session's question waits, its page is told why ("thinking is starting up" before the
  LLM was ever reached, "thinking is retrying" after); once the question goes, the page is told
  that too. When the LLM comes back, each session's latest question is sent once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from services import messages
from services.gateway.session import Session
from services.gateway.stage_outbox import LATEST_ONLY, Notices, StageOutbox
from services.transport import Sender

logger = logging.getLogger(__name__)

STARTING = "thinking is starting up"
RETRYING = "thinking is retrying"


def llm_outbox(sender: Sender, sessions: Mapping[str, Session]) -> StageOutbox[messages.UserText]:
    """The gateway's outbox to the LLM's inbox ``sender``, for the open ``sessions``."""

    def stale(msg: messages.UserText) -> bool:
        session = sessions.get(msg.session)
        return session is None or session.turn != msg.turn

    return StageOutbox("llm", sender, LATEST_ONLY, stale, PageNotices(sessions))


class PageNotices(Notices):
    """Tells a session's page why its question waits, once per change of words."""

    def __init__(self, sessions: Mapping[str, Session]) -> None:
        self._sessions = sessions
        self._told: dict[str, str] = {}  # the words each waiting page was told

    def waits(self, session: str, reached: bool) -> None:
        words = RETRYING if reached else STARTING
        page = self._sessions.get(session)
        if page is not None and self._told.get(session) != words:
            self._told[session] = words
            logger.info("Session(%s) question waits: %s", session, words)
            page.send({"type": "waiting", "stage": "llm", "message": words})

    def cleared(self, session: str) -> None:
        page = self._sessions.get(session)
        if self._told.pop(session, None) is not None and page is not None:
            page.send({"type": "waiting", "stage": "llm", "message": ""})
