"""What an avatar file is, from its first bytes and header, before anything decodes it.

The type is never taken from a file name (an upload's name is the client's word). The pixel
count is read from the image header or the video stream, so a small file that declares a huge
picture (a decompression bomb) is refused before a decoder allocates for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.avatar.errors import AvatarError

# 12 MP phones are common, 48-50 MP ones exist; past this a photo is refused unread.
MAX_IMAGE_PIXELS = 60_000_000
# A 4K video frame; the loop is normalised to <= 720 px anyway.
MAX_VIDEO_PIXELS = 3840 * 2160
MAX_VIDEO_S = 10.5  # "a short video": 10 s (plus a frame or two of container rounding)

PHOTO_KINDS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp"}
VIDEO_KINDS = {"mp4": ".mp4", "webm": ".webm", "avi": ".avi"}


@dataclass(frozen=True, slots=True)
class Sniffed:
    kind: str  # a key of PHOTO_KINDS or VIDEO_KINDS
    photo: bool

    @property
    def suffix(self) -> str:
        return (PHOTO_KINDS if self.photo else VIDEO_KINDS)[self.kind]


def sniff_bytes(head: bytes) -> Sniffed:
    """The file type from its first 16 bytes; ``AvatarError("unsupported")`` otherwise."""
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("jpeg", True)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("png", True)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("webp", True)
    if head[:2] == b"BM":
        return Sniffed("bmp", True)
    if head[4:8] == b"ftyp":  # ISO media: mp4, mov, m4v, 3gp; and HEIF/AVIF stills
        if head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"hevc"):
            raise AvatarError("unsupported", "HEIC/AVIF photos are not supported; save the photo as JPEG or PNG")
        return Sniffed("mp4", False)
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: webm, mkv
        return Sniffed("webm", False)
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("avi", False)
    raise AvatarError(
        "unsupported",
        "this file is not a photo (JPEG, PNG, WebP, BMP) or a video (MP4, MOV, WebM, MKV, AVI)",
    )


def sniff_file(path: str) -> Sniffed:
    with open(path, "rb") as fh:
        return sniff_bytes(fh.read(16))


def check_image_header(path: str) -> tuple[int, int]:
    """(width, height) from the header; refuses corrupt headers and decompression bombs."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Only the header is read here; Pillow decodes nothing until asked.
        with Image.open(path) as im:
            width, height = im.size
    except Image.DecompressionBombError as exc:
        raise AvatarError("too_many_pixels", _bomb_message(None)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AvatarError("corrupt", "the photo could not be read: the file is damaged or incomplete") from exc
    if width * height > MAX_IMAGE_PIXELS:
        raise AvatarError("too_many_pixels", _bomb_message((width, height)))
    if width < 64 or height < 64:
        raise AvatarError("too_small", f"the photo is only {width}x{height} pixels; use one of at least 256x256")
    return width, height


def _bomb_message(size: tuple[int, int] | None) -> str:
    dims = f" ({size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.0f} MP)" if size else ""
    return (f"the picture's dimensions{dims} would need too much memory to open; "
            f"at most {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels")
