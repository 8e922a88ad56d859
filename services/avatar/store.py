"""The avatar library: every prepared avatar, kept under the cache folder, one layout for all.

    <AVATAR_CACHE_DIR>/avatars/
        astronaut/                  the built-in avatar (always there, never deleted)
        <id>/                       id = the first 16 hex digits of the source's sha256
            avatar.json             name, kind, size, frames, face box, warnings, created
            source.<ext>            the file as uploaded, under a generated name
            thumb.jpg               160x160 around the face
            frames.npy              the idle loop: (N, H, W, 3) RGB uint8, normalised, crossfaded
            faces.npy               (N, 4) int32 face box (x, y, w, h) per loop frame
            geometry.json           the photo animation's face geometry (eyes, mouth, jaw)
            <engine step>.npz       an engine's own preparation (Wav2Lip crops, MuseTalk latents),
                                    named for the step and what it depends on (detector, weights)
        .tmp-<id>-<random>/         a preparation in progress

Invariants:
- An entry is complete or absent: it is built in a ``.tmp-`` folder and renamed into place in
  one step; a crash leaves only a ``.tmp-`` folder, removed when the store next opens. Engine
  steps add their file by writing a temporary name and renaming it (``save_npz_atomically``).
- The same content gets the same id, so uploading a photo twice prepares it once.
- Ids are validated (``valid_id``) before they touch a path; nothing from a client is a path.
- frames.npy is memory-mapped: sessions (and processes) on one avatar share its pages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatar_base.files import save_npz_atomically, update_with_file
from services.avatar.errors import AvatarError
from services.avatar.face_geometry import EyeGeometry, FaceGeometry, detect_face_geometry
from services.avatar.loop import AvatarLoop

logger = logging.getLogger(__name__)

ASTRONAUT = "astronaut"
# 2: the face geometry gained where visible teeth begin (closed lips cover them). An entry of an
# older layout keeps its frames; its geometry is measured again when it is loaded (_upgrade).
LAYOUT_VERSION = 2
_ID = re.compile(r"^(astronaut|[0-9a-f]{16})$")
_TMP_PREFIX = ".tmp-"


def valid_id(avatar_id: str) -> bool:
    return isinstance(avatar_id, str) and bool(_ID.match(avatar_id))


def content_id(path: str) -> str:
    digest = hashlib.sha256()
    update_with_file(digest, path)
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AvatarInfo:
    id: str
    name: str
    kind: str  # photo | video
    width: int
    height: int
    frames: int
    face_box: tuple[int, int, int, int]
    warnings: tuple[str, ...] = ()
    created: float = 0.0
    version: int = LAYOUT_VERSION

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["face_box"] = list(self.face_box)
        d["warnings"] = list(self.warnings)
        return d

    @classmethod
    def from_json(cls, d: dict) -> AvatarInfo:
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in fields}
        d["face_box"] = tuple(d["face_box"])
        d["warnings"] = tuple(d.get("warnings", ()))
        return cls(**d)


@dataclass(frozen=True, slots=True)
class PreparedAvatar:
    """What every engine and the gateway start from: the loop, its faces and geometry."""

    info: AvatarInfo
    path: str  # its folder
    loop: AvatarLoop
    faces: np.ndarray  # (N, 4) int32 x, y, w, h
    geometry: FaceGeometry

    @property
    def id(self) -> str:
        return self.info.id

    def frames_bytes(self) -> int:
        h, w = self.loop.frame_size
        return len(self.loop) * h * w * 3

    def face_finder(self, detector: Any | None, color: str) -> Callable[[list[np.ndarray]], list]:
        """The one face detector setting for an engine's step: ``haar`` (or none) takes the boxes
        the store found when it prepared the avatar (the same rule, no second detection); another
        detector (S3FD, ``services.face``) runs on the frames the step is given (``color``
        names their channel order)."""
        if detector is None or detector.name == "haar":
            stored = [tuple(int(v) for v in b) for b in self.faces]
            return lambda frames: stored
        return lambda frames: detector.largest_faces(frames, color=color)

    def step_path(self, step: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,120}", step) or step.startswith("."):
            raise ValueError(f"bad step name {step!r}")
        return os.path.join(self.path, f"{step}.npz")


def geometry_to_json(g: FaceGeometry) -> dict:
    return dataclasses.asdict(g)


def geometry_from_json(d: dict) -> FaceGeometry:
    d = dict(d)
    d["face_box"] = tuple(d["face_box"])
    d["left_eye"] = EyeGeometry(**d["left_eye"])
    d["right_eye"] = EyeGeometry(**d["right_eye"])
    return FaceGeometry(**d)


class AvatarStore:
    def __init__(self, cache_dir: str) -> None:
        self.root = Path(cache_dir) / "avatars"
        self.root.mkdir(parents=True, exist_ok=True)
        self._clean_stale()

    def _clean_stale(self, older_than_s: float = 3600.0) -> None:
        """Half-built entries of a crashed preparation (another process may be building one now,
        so only old ones go)."""
        now = time.time()
        for p in self.root.glob(_TMP_PREFIX + "*"):
            try:
                if now - p.stat().st_mtime > older_than_s:
                    shutil.rmtree(p, ignore_errors=True)
            except FileNotFoundError:
                pass

    # --- reading ---------------------------------------------------------------------------------

    def folder(self, avatar_id: str) -> Path:
        if not valid_id(avatar_id):
            raise AvatarError("unknown_avatar", "no such avatar")
        return self.root / avatar_id

    def has(self, avatar_id: str) -> bool:
        return valid_id(avatar_id) and (self.root / avatar_id / "avatar.json").is_file()

    def info(self, avatar_id: str) -> AvatarInfo:
        try:
            with open(self.folder(avatar_id) / "avatar.json", encoding="utf-8") as fh:
                return AvatarInfo.from_json(json.load(fh))
        except FileNotFoundError as exc:
            raise AvatarError("unknown_avatar", f"no avatar {avatar_id!r}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise AvatarError("unreadable", f"avatar {avatar_id!r} is damaged; delete and upload it again") from exc

    def list(self) -> list[AvatarInfo]:
        out = []
        for p in sorted(self.root.iterdir()):
            if p.name.startswith(_TMP_PREFIX) or not valid_id(p.name) or not (p / "avatar.json").is_file():
                continue
            try:
                out.append(self.info(p.name))
            except AvatarError as exc:
                logger.warning("avatar %s skipped: %s", p.name, exc)
        out.sort(key=lambda i: (i.id != ASTRONAUT, i.created))
        return out

    def thumbnail(self, avatar_id: str) -> Path:
        return self.folder(avatar_id) / "thumb.jpg"

    def load(self, avatar_id: str) -> PreparedAvatar:
        info = self.info(avatar_id)
        folder = self.folder(avatar_id)
        try:
            frames = np.load(folder / "frames.npy", mmap_mode="r", allow_pickle=False)
            faces = np.load(folder / "faces.npy", allow_pickle=False)
            with open(folder / "geometry.json", encoding="utf-8") as fh:
                geometry = geometry_from_json(json.load(fh))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AvatarError("unreadable", f"avatar {avatar_id!r} is damaged ({exc}); delete and upload it again") from exc
        if info.version < LAYOUT_VERSION:
            info, geometry = self._upgrade(info, np.asarray(frames[0]))
        loop = AvatarLoop(tuple(np.asarray(frames[i]) for i in range(len(frames))), str(folder))
        return PreparedAvatar(info, str(folder), loop, faces, geometry)

    def _upgrade(self, info: AvatarInfo, first_frame: np.ndarray) -> tuple[AvatarInfo, FaceGeometry]:
        """Bring an entry of an older layout up to date in place: each file replaced atomically,
        geometry first, so a reader sees the old entry or the new one."""
        geometry = detect_face_geometry(first_frame)
        info = dataclasses.replace(info, version=LAYOUT_VERSION)
        folder = self.folder(info.id)
        for name, payload in (("geometry.json", geometry_to_json(geometry)), ("avatar.json", info.to_json())):
            tmp = folder / f"{name}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(payload), encoding="utf-8")
            os.replace(tmp, folder / name)
        logger.info("avatar %s: layout upgraded to version %d", info.id, LAYOUT_VERSION)
        return info, geometry

    # --- writing ---------------------------------------------------------------------------------

    def new_tmp(self, avatar_id: str) -> Path:
        tmp = self.root / f"{_TMP_PREFIX}{avatar_id}-{os.getpid()}-{os.urandom(4).hex()}"
        tmp.mkdir()
        return tmp

    def commit(self, tmp: Path, info: AvatarInfo, frames: np.ndarray, faces: np.ndarray,
               geometry: FaceGeometry, thumb_jpeg: bytes) -> AvatarInfo:
        """Write the entry's files into ``tmp`` and rename it into place (atomic)."""
        np.save(tmp / "frames.npy", frames, allow_pickle=False)
        np.save(tmp / "faces.npy", faces.astype(np.int32), allow_pickle=False)
        (tmp / "geometry.json").write_text(json.dumps(geometry_to_json(geometry)), encoding="utf-8")
        (tmp / "thumb.jpg").write_bytes(thumb_jpeg)
        # avatar.json last: an entry is readable only once everything else is in the folder.
        (tmp / "avatar.json").write_text(json.dumps(info.to_json()), encoding="utf-8")
        final = self.folder(info.id)
        try:
            os.rename(tmp, final)
        except OSError:
            # The same content was prepared meanwhile (another upload, another process).
            shutil.rmtree(tmp, ignore_errors=True)
            if not self.has(info.id):
                raise
            return self.info(info.id)
        logger.info("avatar %s (%s) stored in %s", info.id, info.name, final)
        return info

    def rename(self, avatar_id: str, name: str) -> None:
        info = dataclasses.replace(self.info(avatar_id), name=name)
        path = self.folder(avatar_id) / "avatar.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info.to_json()), encoding="utf-8")
        os.replace(tmp, path)

    def delete(self, avatar_id: str) -> None:
        if avatar_id == ASTRONAUT:
            raise AvatarError("builtin", "the astronaut is built in and cannot be deleted")
        folder = self.folder(avatar_id)
        if not folder.is_dir():
            raise AvatarError("unknown_avatar", f"no avatar {avatar_id!r}")
        # Renamed away first, so a reader never sees a half-deleted entry.
        doomed = self.root / f"{_TMP_PREFIX}deleted-{avatar_id}-{os.urandom(4).hex()}"
        os.rename(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())

    # --- engine steps ----------------------------------------------------------------------------

    def step(self, avatar: PreparedAvatar, step: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """An engine's preparation of ``avatar``, from its file, or built now and kept."""
        path = avatar.step_path(step)
        if os.path.isfile(path):
            try:
                with np.load(path, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files}
                logger.info("avatar %s: %s from the store", avatar.id, step)
                return arrays
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("avatar %s: %s unreadable (%s); preparing it again", avatar.id, step, exc)
        started = time.monotonic()
        arrays = build()
        if os.path.isdir(avatar.path):  # deleted meanwhile: nothing to keep
            save_npz_atomically(path, **arrays)
        logger.info("avatar %s: %s prepared in %.1f s", avatar.id, step, time.monotonic() - started)
        return arrays
