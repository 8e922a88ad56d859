"""The ``say`` command: the avatar speaks a given text word for word instead of answering it.

For kiosks, announcements and bots built on top, and for tests that measure the lips against
known words. Two doors, one path:

- the page's WebSocket: ``{"type": "say", "text": "..."}`` (validated like a typed question by
  ``signaling.parse``, and rate-limited by the same per-session bucket);
- HTTP: ``POST /api/say`` with ``{"text": "...", "session": "<id>"}`` (JSON; ``session``
  optional: without it every open session speaks, an announcement). ``/api/*`` needs the access
  token off loopback; a browser's cross-origin request is refused by its ``Origin``.

A say starts a new turn (so it cuts off an answer in flight, and a later question or the user's
voice cuts it off: barge-in as for any answer) and goes straight to the TTS stage, clause by
clause, bypassing the LLM. It is not part of the conversation the LLM sees. The clauses go
through the TTS's outbox (stage_outbox.py): a TTS that is down or full never holds the page's
handler, nor the HTTP announcement that speaks to every session.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from aiohttp import web

from services import messages
from services.gateway import signaling
from services.gateway.access import AccessPolicy
from services.gateway.session import Session
from services.gateway.stage_outbox import StageOutbox
from services.gateway.turn_keeper import TurnKeeper
from services.llm.clauses import ClauseSplitter

logger = logging.getLogger(__name__)

# Clauses one session may have waiting for the TTS (as many as the TTS itself queues for one):
# far more than one say produces, and a newer say's turn makes the older clauses stale anyway.
SAY_BACKLOG_CLAUSES = 64


def clauses_of(text: str) -> list[str]:
    """The text cut where the LLM's answers are cut, so the first words sound early."""
    splitter = ClauseSplitter()
    return splitter.feed(text + " ") + splitter.flush()


class Speaker:
    def __init__(
        self,
        tts: StageOutbox[messages.TextChunk],
        turns: TurnKeeper,
        sessions: Callable[[], dict[str, Session]],
        access: AccessPolicy,
        refuse: Callable[[Session, str, str], None],
    ) -> None:
        self._tts = tts
        self._turns = turns
        self._sessions = sessions
        self._access = access
        self._refuse = refuse

    async def say(self, session: Session, text: str) -> int:
        """Speak ``text`` (already validated and rate-limited) in a new turn; returns the turn."""
        turn = await self._turns.new_turn(session, reason="say")
        parts = clauses_of(text)
        # The clock of the turn's first-audio figure starts now, as for a typed question.
        session.turn_stats(turn).speech_end_unix_s = time.time()
        session.set_state("thinking")
        for i, part in enumerate(parts):
            self._tts.put(messages.TextChunk(session.id, turn, i, part, i == len(parts) - 1))
        logger.info("Session(%s) turn %d: saying %d characters in %d clauses", session.id, turn, len(text), len(parts))
        return turn

    async def http(self, request: web.Request) -> web.Response:
        """``POST /api/say``: the token was checked by the gateway's middleware."""
        if not self._access.origin_ok(request.headers.get("Origin"), request.scheme, request.host):
            return _error(403, "bad_origin", "this origin may not use the avatar")
        if request.content_type != "application/json":
            return _error(415, "bad_message", "send JSON (Content-Type: application/json)")
        raw = await request.content.read(signaling.MAX_MESSAGE_BYTES + 1)
        try:
            body = json.loads(raw) if len(raw) <= signaling.MAX_MESSAGE_BYTES else None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return _error(400, "bad_json", "the body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "bad_message", "the body must be a JSON object under 64 KiB")
        target = body.get("session")
        if target is not None and not isinstance(target, str):
            return _error(400, "bad_field", "'session' must be a session id")
        try:
            msg = signaling.parse(json.dumps({"type": "say", "text": body.get("text")}))
        except signaling.ClientMessageError as exc:
            return _error(400, exc.code, str(exc))
        assert isinstance(msg, signaling.Say)
        sessions = self._sessions()
        chosen = [sessions[target]] if target in sessions else [] if target else list(sessions.values())
        if not chosen:
            return _error(404, "no_session", "no such session" if target else "no session is open")
        spoken, limited = {}, []
        for session in chosen:
            if not session.limits.text.take():
                limited.append(session.id)
                self._refuse(session, "rate_limited", f"too many questions: wait {session.limits.text.retry_after_s():.0f} s")
                continue
            spoken[session.id] = await self.say(session, msg.text)
        if not spoken:
            return _error(429, "rate_limited", "too many questions: wait and try again")
        return web.json_response({"type": "said", "turns": spoken, "rate_limited": limited})


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "code": code, "message": message}, status=status)
