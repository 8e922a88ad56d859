"""Avatar files for tests and benchmarks, made offline from scikit-image's sample photos:
good photos and videos, and one bad file of every kind the avatar store must refuse clearly."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import av
import cv2
import numpy as np
import skimage.data


def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def my_face() -> np.ndarray:
    """A face that is not the built-in astronaut: mirrored, warmer, on a blue backdrop."""
    img = astronaut()[:, ::-1].astype(np.int16)
    img[..., 0] += 25
    img[..., 2] -= 15
    img = np.clip(img, 0, 255).astype(np.uint8)
    backdrop = np.zeros((640, 560, 3), np.uint8)
    backdrop[:] = (30, 60, 160)
    backdrop[64:576, 24:536] = img
    return backdrop


def write_photo(path: Path, rgb: np.ndarray, quality: int = 92) -> Path:
    ok, data = cv2.imencode(path.suffix or ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix in (".jpg", ".jpeg", "") else [])
    assert ok
    path.write_bytes(data.tobytes())
    return path


def phone_photo(path: Path) -> Path:
    """A 12-megapixel (4000x3000) JPEG of the astronaut, as a phone would take it: with sensor
    grain, so it weighs what a phone's photo does (a few MB), not what a smooth upscale does."""
    face = cv2.resize(astronaut(), (2600, 2600), interpolation=cv2.INTER_CUBIC)
    canvas = np.zeros((3000, 4000, 3), np.uint8)
    canvas[:] = (90, 100, 110)
    canvas[200:2800, 700:3300] = face
    grain = np.random.default_rng(12).normal(0, 4, canvas.shape)
    canvas = np.clip(canvas + grain, 0, 255).astype(np.uint8)
    return write_photo(path, canvas, 92)


def write_video(path: Path, seconds: float, size: tuple[int, int] = (1920, 1080), face: np.ndarray | None = None,
                codec: str = "libx264") -> Path:
    """A ``seconds`` long 25 fps video of ``face`` drifting slowly on a plain background."""
    w, h = size
    face = astronaut() if face is None else face
    side = int(min(w, h) * 0.8)
    face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    canvas = np.full((h, w, 3), 80, np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * 25)):
            frame = canvas.copy()
            x = (w - side) // 2 + int(0.03 * w * np.sin(i / 12))
            frame[(h - side) // 2 : (h - side) // 2 + side, x : x + side] = face
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` pixels, with almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_bomb() -> bytes:
    """A small JPEG whose frame header claims 65000 x 65000 pixels."""
    ok, data = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    raw = bytearray(data.tobytes())
    sof = raw.find(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(raw)


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the error code it must get). Twenty kinds."""
    folder.mkdir(parents=True, exist_ok=True)
    a = astronaut()
    out: dict[str, tuple[Path, str]] = {}

    def put(name: str, data: bytes, code: str) -> None:
        path = folder / name
        path.write_bytes(data)
        out[name] = (path, code)

    def photo(name: str, rgb: np.ndarray, code: str) -> None:
        out[name] = (write_photo(folder / name, rgb), code)

    photo("wall.png", np.full((400, 400, 3), 128, np.uint8), "no_face")
    photo("coffee.jpg", skimage.data.coffee(), "no_face")
    turn = cv2.getRotationMatrix2D((256, 256), 30, 1.0)
    photo("tilted.jpg", cv2.warpAffine(a, turn, (512, 512), borderMode=cv2.BORDER_REPLICATE), "face_turned")
    small = np.full((1200, 1200, 3), 120, np.uint8)
    small[:512, :512] = a
    photo("far_away.jpg", small, "face_too_small")
    photo("blurred.jpg", cv2.GaussianBlur(a, (0, 0), 4), "blurred")
    photo("very_blurred.png", cv2.GaussianBlur(a, (0, 0), 8), "blurred")
    from services.avatar.animation import FaceAnimator

    photo("mouth_open.png", FaceAnimator(a).render(1.0, 0.0), "mouth_open")
    put("notes.jpg", b"just some text, not a picture at all\n" * 10, "unsupported")
    put("document.pdf", b"%PDF-1.4\n" + b"0" * 500, "unsupported")
    put("anim.gif", b"GIF89a" + b"\x00" * 500, "unsupported")
    put("archive.png", b"PK\x03\x04" + b"\x00" * 500, "unsupported")
    put("truncated.jpg", cv2.imencode(".jpg", a)[1].tobytes()[:300], "corrupt")
    put("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x13" * 400, "corrupt")
    put("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x42" * 2000, "corrupt")
    put("broken.webm", b"\x1a\x45\xdf\xa3" + b"\x07" * 2000, "corrupt")
    put("bomb.png", png_bomb(), "too_many_pixels")
    put("bomb.jpg", jpeg_bomb(), "too_many_pixels")
    photo("thumbnail.png", cv2.resize(a, (48, 48)), "too_small")
    out["long.mp4"] = (write_video(folder / "long.mp4", 12.0, (320, 240), codec="mpeg4"), "too_long")
    out["empty_room.mp4"] = (write_video(folder / "empty_room.mp4", 1.0, (320, 240), np.full((64, 64, 3), 90, np.uint8), "mpeg4"), "no_face")
    return out
