"""Open the avatar store for a service: the cache folder's, or a private temporary one."""

from __future__ import annotations

import atexit
import shutil
import tempfile

from services.avatar.prepare import ensure_default
from services.avatar.store import AvatarStore, PreparedAvatar

_TEMP: dict[str, AvatarStore] = {}


def open_store(cache_dir: str) -> AvatarStore:
    """The store under ``cache_dir``; with no cache folder (tests, tools), one temporary store
    per process, removed at exit."""
    if cache_dir:
        return AvatarStore(cache_dir)
    if "" not in _TEMP:
        root = tempfile.mkdtemp(prefix="avatar-store-")
        atexit.register(shutil.rmtree, root, True)
        _TEMP[""] = AvatarStore(root)
    return _TEMP[""]


def default_avatar(cache_dir: str, source: str) -> tuple[AvatarStore, PreparedAvatar]:
    """The store and the server's default avatar (``AVATAR_IMAGE``; "" = the astronaut)."""
    store = open_store(cache_dir)
    return store, store.load(ensure_default(store, source))
