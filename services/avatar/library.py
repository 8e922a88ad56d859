"""Open the avatar store for a service: the cache folder's, or a temporary one of its own."""

from __future__ import annotations

import shutil
import tempfile
import weakref

from services.avatar.prepare import ensure_default
from services.avatar.store import AvatarStore, PreparedAvatar


def open_store(cache_dir: str) -> AvatarStore:
    """The store under ``cache_dir``; with no cache folder (tests, tools), a temporary store
    owned by the returned object: its folder goes when the store is collected or at exit. A
    process that needs one store in several places opens it once and passes it down."""
    if cache_dir:
        return AvatarStore(cache_dir)
    root = tempfile.mkdtemp(prefix="avatar-store-")
    store = AvatarStore(root)
    weakref.finalize(store, shutil.rmtree, root, True)
    return store


def default_avatar(store: AvatarStore, source: str) -> PreparedAvatar:
    """The server's default avatar (``AVATAR_IMAGE``; "" = the astronaut), prepared into ``store``."""
    return store.load(ensure_default(store, source))
