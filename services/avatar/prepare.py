"""Prepare an avatar from a photo or a short video into the store, with progress.

    python -m services.avatar.prepare --cache-dir DIR --source FILE [--name NAME]

prints one JSON object per line: ``{"step": ..., "progress": 0..1}`` while it works, then
``{"ok": true, "avatar": {...}}`` or ``{"ok": false, "code": ..., "message": ...}``. The gateway
runs it as a child process (services/gateway/avatar_jobs.py): a decoder that crashes or eats
memory on a hostile file takes down the child, never the gateway, and the live calls keep their
CPU (the child runs at a lower priority).

Steps (the engine-independent part, shared by every engine): read and normalise (long side <=
720 px, 25 fps), the idle loop (crossfaded wrap), face detection and checks (services/avatar/
checks.py), the photo animation's face geometry, the face box of every loop frame (the one
detector rule of avatar_base/haar.py, which Wav2Lip and MuseTalk use from the store), a
thumbnail. The engine's own step (the animation's face animators, Wav2Lip's crops, MuseTalk's
latents) runs next in the lip-sync stage, which owns those models: the gateway asks it
(``PrepareAvatar``) and shows its progress in the same job (services/gateway/avatar_jobs.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np

from avatar_base.faces import fill_from_neighbours
from avatar_base.haar import largest_face, load_cascade
from services.avatar.checks import check_quality, find_face
from services.avatar.errors import AvatarError
from services.avatar.face_geometry import detect_face_geometry
from services.avatar.loader import astronaut, load_photo, load_video
from services.avatar.loop import crossfade
from services.avatar.sniff import sniff_file
from services.avatar.store import ASTRONAUT, AvatarInfo, AvatarStore, content_id

logger = logging.getLogger(__name__)

Report = Callable[[str, float], None]
THUMB_PX = 160
MAX_NAME_CHARS = 40


def clean_name(name: str, fallback: str) -> str:
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:MAX_NAME_CHARS]
    return name or fallback


def _quiet(step: str, progress: float) -> None:
    pass


def prepare_file(store: AvatarStore, source: str, name: str = "", report: Report = _quiet) -> AvatarInfo:
    """The avatar of ``source`` in the store (prepared now unless the same content is there)."""
    report("checking the file", 0.02)
    sniffed = sniff_file(source)
    avatar_id = content_id(source)
    if store.has(avatar_id):
        report("ready", 1.0)
        return store.info(avatar_id)
    if sniffed.photo:
        report("reading the photo", 0.05)
        frames = [load_photo(source)]
    else:
        report("reading the video", 0.05)
        frames = load_video(source, lambda f: report("reading the video", 0.05 + 0.45 * f))
    kind = "photo" if sniffed.photo else "video"
    fallback = f"{kind} {time.strftime('%Y-%m-%d %H:%M')}"
    return _prepare(store, avatar_id, clean_name(name, fallback), kind, frames, report,
                    lambda tmp: shutil.copyfile(source, tmp / f"source{sniffed.suffix}"))


def ensure_astronaut(store: AvatarStore) -> AvatarInfo:
    if store.has(ASTRONAUT):
        return store.info(ASTRONAUT)
    return _prepare(store, ASTRONAUT, "Astronaut", "photo", [astronaut()], _quiet, lambda tmp: None)


def ensure_default(store: AvatarStore, source: str) -> str:
    """The id of the server's default avatar (``AVATAR_IMAGE``, "" = the astronaut)."""
    ensure_astronaut(store)
    if not source:
        return ASTRONAUT
    if not os.path.isfile(source):
        raise AvatarError("missing", f"avatar file {source!r} does not exist; set AVATAR_IMAGE to a photo "
                          "or a short video, or leave it empty for the built-in astronaut")
    try:
        return prepare_file(store, source, os.path.splitext(os.path.basename(source))[0]).id
    except AvatarError as exc:  # a server setting: name the file (uploads never show a path)
        raise AvatarError(exc.code, f"avatar file {source!r}: {exc}") from exc


def _prepare(store, avatar_id, name, kind, frames, report, keep_source) -> AvatarInfo:  # noqa: ANN001
    report("finding the face", 0.55)
    first = frames[0]
    face = find_face(first)
    geometry = detect_face_geometry(first)
    check_quality(first, face, geometry)
    report("building the idle loop", 0.65)
    loop = np.stack(crossfade(frames)) if len(frames) > 1 else np.stack(frames)
    report("tracking the face", 0.7)
    faces = _track(loop, face.box, lambda f: report("tracking the face", 0.7 + 0.25 * f))
    report("saving", 0.96)
    h, w = first.shape[:2]
    info = AvatarInfo(avatar_id, name, kind, w, h, len(loop), face.box, tuple(face.warnings()), time.time())
    tmp = store.new_tmp(avatar_id)
    try:
        keep_source(tmp)
        info = store.commit(tmp, info, loop, faces, geometry, _thumbnail(first, face.box))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report("ready", 1.0)
    return info


def _track(loop: np.ndarray, first_box: tuple[int, int, int, int], progress: Callable[[float], None]) -> np.ndarray:
    """The face box of every loop frame, by the one Haar rule (the largest frontal face on an
    equalized grey image), searched near the previous frame's face and at about its size: a
    face moves a little between frames 40 ms apart, and a whole-frame search at every scale
    cost 166 ms per 720p frame here against a few ms. A frame where it is not found there gets
    a whole-frame search; a frame where it is not found at all takes its neighbour's box."""
    if len(loop) == 1:
        return np.array([first_box], np.int32)
    cascade = load_cascade()
    found: list[tuple[int, int, int, int] | None] = []
    previous = first_box
    for i, frame in enumerate(loop):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        box = _near(gray, previous, cascade) or largest_face(gray, cascade)
        found.append(box)
        previous = box or previous
        if i % 10 == 0:
            progress(i / len(loop))
    hits = sum(1 for b in found if b is not None)
    filled = fill_from_neighbours(found)
    if filled is None or hits < len(found) // 2:
        raise AvatarError("face_lost", f"the face is visible in only {hits} of {len(found)} frames; "
                          "keep the face turned to the camera for the whole video")
    return np.array(filled, np.int32)


def _near(gray: np.ndarray, box: tuple[int, int, int, int], cascade: cv2.CascadeClassifier) -> tuple[int, int, int, int] | None:
    x, y, w, h = box
    H, W = gray.shape
    x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
    x1, y1 = min(W, x + w + w // 2), min(H, y + h + h // 2)
    roi = cv2.equalizeHist(gray[y0:y1, x0:x1])
    faces = cascade.detectMultiScale(roi, scaleFactor=1.1, minNeighbors=5,
                                     minSize=(int(0.75 * w), int(0.75 * h)), maxSize=(int(1.33 * w), int(1.33 * h)))
    if len(faces) == 0:
        return None
    fx, fy, fw, fh = max(faces, key=lambda f: int(f[2]) * int(f[3]))
    return int(fx) + x0, int(fy) + y0, int(fw), int(fh)


def _thumbnail(rgb: np.ndarray, box: tuple[int, int, int, int]) -> bytes:
    x, y, w, h = box
    cx, cy, half = x + w // 2, y + h // 2, int(max(w, h) * 0.9)
    H, W = rgb.shape[:2]
    crop = rgb[max(0, cy - half) : min(H, cy + half), max(0, cx - half) : min(W, cx + half)]
    thumb = cv2.resize(crop, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return jpeg.tobytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--name", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    cv2.setNumThreads(1)

    def emit(payload: dict) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    try:
        info = prepare_file(AvatarStore(args.cache_dir), args.source, args.name,
                            lambda step, p: emit({"step": step, "progress": round(p, 3)}))
    except AvatarError as exc:
        emit({"ok": False, "code": exc.code, "message": str(exc)})
        return 0
    except MemoryError:
        emit({"ok": False, "code": "too_large", "message": "the file needs more memory than this server allows"})
        return 0
    except Exception as exc:  # never a traceback to the person; the log keeps it
        logger.exception("avatar preparation failed")
        emit({"ok": False, "code": "failed", "message": f"the file could not be prepared ({type(exc).__name__})"})
        return 0
    emit({"ok": True, "avatar": info.to_json()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
