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
- **Host, as Jupyter does it.** Bound to loopback, the gateway answers only requests whose
  ``Host`` names this machine (``localhost``, a loopback address, the bound address) or a name in
  ``AVATAR_ALLOWED_HOSTS``; anything else gets 403 on every route. Without it, DNS rebinding
  opens the avatar to any web site: a page on ``evil.example`` whose name resolves to 127.0.0.1
  sends ``Host`` and ``Origin`` of ``evil.example``, which match each other, and loopback needs
  no token. Off loopback the token is the guard; the host check applies there too when
  ``AVATAR_ALLOWED_HOSTS`` is set. The port is not checked, as in Jupyter: rebinding changes
  the name, and a port forward (``ssh -L 9000:localhost:8080``) changes the port legitimately.
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


def parse_hosts(raw: str) -> tuple[str, ...]:
    """``AVATAR_ALLOWED_HOSTS``: comma-separated host names (or addresses), without scheme or port."""
    hosts = []
    for item in raw.split(","):
        item = item.strip().lower()
        if not item:
            continue
        name = host_name(item)
        if not name or "/" in item or item not in (name, f"[{name}]", f"{name}."):
            raise AccessConfigError(f"AVATAR_ALLOWED_HOSTS: {item!r} is not a host name like kiosk.local (no scheme or port)")
        hosts.append(name)
    return tuple(hosts)


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, lower case, without the port or a trailing dot:
    ``[::1]:8080`` -> ``::1``, ``Localhost.:8080`` -> ``localhost``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def host_check_names(bound_host: str, allowed_hosts: tuple[str, ...]) -> frozenset[str] | None:
    """The host names the gateway answers to, or None where any will do (off loopback with no
    ``AVATAR_ALLOWED_HOSTS``: the token guards it there)."""
    if not is_loopback(bound_host) and not allowed_hosts:
        return None
    names = {"localhost", *allowed_hosts}
    if bound_host and bound_host not in ("0.0.0.0", "::"):
        names.add(host_name(bound_host))
    return frozenset(names)


HOST_REFUSED_MESSAGE = (
    "this avatar answers only to this machine's names (localhost, 127.0.0.1, [::1]); to reach it "
    "as {name!r}, add that name to AVATAR_ALLOWED_HOSTS"
)


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    token: str = ""  # "" = open (loopback)
    allowed_origins: tuple[str, ...] = ()
    # None = any Host (off loopback without AVATAR_ALLOWED_HOSTS); see host_check_names.
    allowed_hosts: frozenset[str] | None = None

    def host_ok(self, host_header: str) -> bool:
        if self.allowed_hosts is None:
            return True
        name = host_name(host_header)
        if name in self.allowed_hosts:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def origin_ok(self, origin: str | None, scheme: str, host_header: str) -> bool:
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        return origin == f"{scheme}://{host_header}".lower() or origin in self.allowed_origins

    def token_ok(self, offered: str | None) -> bool:
        if not self.token:
            return True
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())
