"""Conversations, owned by the gateway and kept on disk, so no process restart loses one.

The gateway knows what the user said (the final transcript or the typed text) and what they
actually heard of each answer (the clauses its media clock played, or the text it showed to a
page without a call). It records both here and sends the history with every LLM request, so
the model services keep no conversation state: a restarted LLM loses nothing, and a restarted
gateway reloads the conversation when the page reconnects with its conversation id.

Storage: one SQLite file in the cache folder (``conversations.sqlite3``), WAL mode, one row
per exchange. The id is a random 128-bit secret the page keeps; whoever has it can continue
the conversation, so it is never logged in full.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

MAX_EXCHANGES = 32  # kept per conversation; older ones are deleted (the LLM trims further)
# Deleted a block at a time, so the history sent keeps the same first exchange for this many
# turns: the LLM's prefix cache reuses a prompt only while its beginning stays put (a
# multiple of services/llm/history.py's TRIM_STEP).
TRIM_BLOCK = 8
RETENTION_S = 30 * 24 * 3600
_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def valid_id(conversation_id: str) -> bool:
    return bool(_ID.match(conversation_id))


@dataclass(slots=True)
class Exchange:
    turn: int
    user: str
    assistant: str = ""
    interrupted: bool = False
    done: bool = False  # the answer finished (or was cut off): what the user heard is final


@dataclass(slots=True)
class Conversation:
    id: str
    exchanges: list[Exchange] = field(default_factory=list)

    def history_json(self, before_turn: int) -> str:
        """The exchanges before ``before_turn`` as chat messages (what the LLM is sent)."""
        chat: list[dict[str, str]] = []
        for ex in self.exchanges:
            if ex.turn >= before_turn:
                continue
            chat.append({"role": "user", "content": ex.user})
            if ex.assistant:
                chat.append({"role": "assistant", "content": ex.assistant + (" ..." if ex.interrupted else "")})
        return json.dumps(chat, ensure_ascii=False)

    def transcript(self) -> list[dict[str, str]]:
        """For the page after a reconnect: what was said so far."""
        out = []
        for ex in self.exchanges:
            out.append({"role": "user", "text": ex.user})
            if ex.assistant:
                out.append({"role": "avatar", "text": ex.assistant})
        return out


class ConversationStore:
    """SQLite-backed; every call is short and synchronous (a few rows), guarded by a lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS exchanges ("
                " conversation TEXT NOT NULL, turn INTEGER NOT NULL, user TEXT NOT NULL,"
                " assistant TEXT NOT NULL DEFAULT '', interrupted INTEGER NOT NULL DEFAULT 0,"
                " done INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL,"
                " PRIMARY KEY (conversation, turn))"
            )
            self._db.execute("DELETE FROM exchanges WHERE updated < ?", (time.time() - RETENTION_S,))

    def open(self, conversation_id: str | None) -> Conversation:
        """The stored conversation, or a new one (an unknown or malformed id starts afresh)."""
        if conversation_id and valid_id(conversation_id):
            with self._lock:
                rows = self._db.execute(
                    "SELECT turn, user, assistant, interrupted, done FROM exchanges"
                    " WHERE conversation = ? ORDER BY turn", (conversation_id,),
                ).fetchall()
            if rows:
                return Conversation(conversation_id, [Exchange(t, u, a, bool(i), bool(d)) for t, u, a, i, d in rows])
        return Conversation(secrets.token_urlsafe(16))

    def record_user(self, conv: Conversation, turn: int, text: str) -> Exchange:
        ex = Exchange(turn, text)
        conv.exchanges = [e for e in conv.exchanges if e.turn != turn] + [ex]
        if len(conv.exchanges) > MAX_EXCHANGES:
            del conv.exchanges[:TRIM_BLOCK]
        self._write(conv, ex)
        return ex

    def record_answer(self, conv: Conversation, turn: int, heard: str, interrupted: bool) -> None:
        for ex in reversed(conv.exchanges):
            if ex.turn == turn and not ex.done:
                ex.assistant, ex.interrupted, ex.done = heard.strip(), interrupted, True
                self._write(conv, ex)
                return

    def discard(self, conv: Conversation, turn: int) -> None:
        """Forget an unanswered question (it joined the next turn: one thought, one turn)."""
        conv.exchanges = [e for e in conv.exchanges if e.turn != turn]
        with self._lock:
            self._db.execute("DELETE FROM exchanges WHERE conversation = ? AND turn = ?", (conv.id, turn))

    def _write(self, conv: Conversation, ex: Exchange) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO exchanges VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conv.id, ex.turn, ex.user, ex.assistant, int(ex.interrupted), int(ex.done), time.time()),
            )
            oldest_kept = conv.exchanges[0].turn if conv.exchanges else 0
            self._db.execute("DELETE FROM exchanges WHERE conversation = ? AND turn < ?", (conv.id, oldest_kept))

    def close(self) -> None:
        with self._lock:
            self._db.close()
