"""Short-lived TURN credentials, per session (the TURN REST API scheme coturn implements with
``use-auth-secret``).

username = "<expiry unix time>:<session id>", credential = base64(HMAC-SHA1(secret, username)).
coturn recomputes the HMAC with the same shared secret and refuses an expired username, so a
credential is useless after its time and says which session it was minted for. They are only
handed to clients that passed the gateway's origin and token checks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass


# Whoever knows the secret can mint credentials for the relay. .env.example ships a placeholder
# so that a copied file does not silently run with a known one; docker/turn/entrypoint.sh
# applies the same two rules to coturn.
PLACEHOLDER_SECRET = "change-me-to-a-long-random-string"
MIN_SECRET_CHARS = 32


def secret_problem(secret: str) -> str:
    """Why ``secret`` must not be used ("" if it may)."""
    if secret == PLACEHOLDER_SECRET:
        return "is still the placeholder from .env.example"
    if len(secret) < MIN_SECRET_CHARS:
        return f"has {len(secret)} characters; it needs at least {MIN_SECRET_CHARS}"
    return ""


@dataclass(frozen=True, slots=True)
class TurnSettings:
    urls: tuple[str, ...] = ()  # e.g. ("turn:host:3478?transport=udp", "turn:host:3478?transport=tcp")
    secret: str = ""  # coturn's static-auth-secret
    ttl_s: int = 3600

    @property
    def enabled(self) -> bool:
        return bool(self.urls and self.secret)


def mint(settings: TurnSettings, session: str, now: float | None = None) -> dict:
    """An RTCIceServer dict for ``session``, valid for ``settings.ttl_s``."""
    expiry = int((time.time() if now is None else now) + settings.ttl_s)
    username = f"{expiry}:{session}"
    digest = hmac.new(settings.secret.encode(), username.encode(), hashlib.sha1).digest()
    return {"urls": list(settings.urls), "username": username, "credential": base64.b64encode(digest).decode()}


def verify(settings: TurnSettings, username: str, credential: str, now: float | None = None) -> bool:
    """What coturn checks (for tests and for reading coturn's logs)."""
    expiry, _, _session = username.partition(":")
    if not expiry.isdigit() or int(expiry) < (time.time() if now is None else now):
        return False
    digest = hmac.new(settings.secret.encode(), username.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(base64.b64encode(digest).decode(), credential)
