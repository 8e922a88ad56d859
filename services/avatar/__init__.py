"""The avatar, prepared once and shared by every lip-sync engine and by the gateway's idle frames.

- ``store`` / ``prepare`` / ``library``: the avatar library under the cache folder (one entry
  per content hash: name, thumbnail, loop, faces, geometry, and each engine's own step), and
  the one preparation pipeline every engine and the gateway take avatars from;
- ``sniff`` / ``checks`` / ``errors``: what a file is, whether its face can be animated, and
  the clear error (``AvatarError.code``) when not;
- ``loader``: read the bundled astronaut, a photo or a short video; normalise it (long side
  <= 720 px, even size, 25 fps).
- ``loop``: the forward loop of those frames (``AvatarLoop``), with a crossfade at the wrap.
- ``idle``: what the silent avatar shows at running frame i (``IdleAvatar``): a photo with the
  idle motion (breathing, blinking), or the video's forward loop.
- ``animation`` / ``face_geometry``: the photo animation (the embedded default lip-sync, and the
  idle motion of a photo for every engine).

Every engine indexes frames the same way (running frame i -> loop frame i % len), so idle and
talking frames of one avatar have the same size and the switch between them is seamless.
"""

from services.avatar.errors import AvatarError
from services.avatar.loader import (
    MAX_LONG_SIDE_PX,
    PHOTO_SUFFIXES,
    VIDEO_SUFFIXES,
    load_avatar,
    normalize_frame,
)
from services.avatar.loop import AvatarLoop, load_loop

__all__ = [
    "MAX_LONG_SIDE_PX",
    "PHOTO_SUFFIXES",
    "VIDEO_SUFFIXES",
    "AvatarError",
    "AvatarLoop",
    "load_avatar",
    "load_loop",
    "normalize_frame",
]
