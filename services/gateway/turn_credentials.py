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
