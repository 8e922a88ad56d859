"""Who may use the gateway: the WebSocket's Origin, and an access token off localhost.

- **Origin.** A browser sends ``Origin`` with every WebSocket. Only the page's own origin (the
  same scheme, host and port the request came to) and ``AVATAR_ALLOWED_ORIGINS`` may open
  ``/ws``: otherwise any web page the user visits could drive the local avatar. A request
  without Origin is not from a browser page, so no other site can be behind it; it still needs
  the token where one is required.
- **Token, as Jupyter does it.** Bound to a non-loopback address, the gateway requires a token
  on ``/ws``, ``/api/*`` and ``/metrics``: ``AVATAR_ACCESS_TOKEN``, or one generated on first
  start and kept in the cache folder (mode 0600), so the URL stays the same across restarts. The
  printed URL carries it as ``?token=``; the page keeps it (a SameSite=Strict, HttpOnly cookie
  set when the page is loaded with the token, and the page's own copy for the WebSocket URL).
  Loopback stays open by default.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

TOKEN_COOKIE = "avatar_token"
TOKEN_FILE = "access_token"
_MIN_TOKEN_CHARS = 16


class AccessConfigError(ValueError):
    """A token or origin setting that cannot be used."""


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses; "" and 0.0.0.0 mean every interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, env: Mapping[str, str], cache_dir: str) -> str:
    """The token the gateway requires, or "" when it is bound to loopback only.

    ``AVATAR_ACCESS_TOKEN`` wins; otherwise the kept one, or a new one written once.
    """
    explicit = env.get("AVATAR_ACCESS_TOKEN", "").strip()
    if explicit:
        if len(explicit) < _MIN_TOKEN_CHARS:
            raise AccessConfigError(f"AVATAR_ACCESS_TOKEN must be at least {_MIN_TOKEN_CHARS} characters")
        return explicit
    if is_loopback(host):
        return ""
    path = os.path.join(cache_dir, TOKEN_FILE)
    try:
        with open(path, encoding="ascii") as f:
            kept = f.read().strip()
        if len(kept) >= _MIN_TOKEN_CHARS:
            return kept
    except FileNotFoundError:
        pass
    os.makedirs(cache_dir, exist_ok=True)
    token = secrets.token_urlsafe(24)
    # Created 0600 in one step: the token is a password.
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    os.replace(path + ".tmp", path)
    logger.info("generated an access token, kept in %s", path)
    return token


def parse_origins(raw: str) -> tuple[str, ...]:
    origins = []
    for item in raw.split(","):
        item = item.strip().rstrip("/")
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise AccessConfigError(f"AVATAR_ALLOWED_ORIGINS: {item!r} is not an origin like https://host:port")
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    return tuple(origins)


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    token: str = ""  # "" = open (loopback)
    allowed_origins: tuple[str, ...] = ()

    def origin_ok(self, origin: str | None, scheme: str, host_header: str) -> bool:
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        return origin == f"{scheme}://{host_header}".lower() or origin in self.allowed_origins

    def token_ok(self, offered: str | None) -> bool:
        if not self.token:
            return True
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())
