"""The avatar library over HTTP, for the page and for integrators.

    GET    /api/avatars                    every avatar: ready ones and preparations in progress
    POST   /api/avatars                    multipart: ``file`` (photo or short video), ``name``
                                           -> 202 {"id", "status": "preparing", ...}
    GET    /api/avatars/{id}               status, step and progress (0..1), or the error
    GET    /api/avatars/{id}/thumbnail     160x160 JPEG
    DELETE /api/avatars/{id}               -> 204 (the astronaut stays)

Safety (every refusal is JSON ``{"type": "error", "code", "message"}``, never a traceback):
- the token (the gateway's middleware, as every /api/ route) and, for POST and DELETE, the
  page's origin (as /ws);
- the size limit is enforced while the upload streams in (a declared Content-Length over it is
  refused before reading), and the type is sniffed from the first bytes, not the name;
- the upload is written under a generated name; the avatar's id is its content hash;
- per address: one preparation at a time and ``uploads_per_hour``; in total: ``max_avatars``
  and ``max_store_mb`` on disk, and ``max_running`` preparations at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from services.avatar.errors import AvatarError
from services.avatar.prepare import clean_name
from services.avatar.sniff import sniff_bytes
from services.avatar.store import ASTRONAUT, valid_id
from services.gateway.access import AccessPolicy
from services.gateway.avatar_jobs import AvatarJobs, EngineStep, Job
from services.gateway.avatar_library import AvatarLibrary
from services.settings_util import env_int

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class UploadSettings:
    max_upload_mb: int = 64
    uploads_per_hour: int = 20
    max_avatars: int = 100
    max_store_mb: int = 4096
    max_running: int = 2
    timeout_s: int = 180

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> UploadSettings:
        d = cls()
        return cls(
            max_upload_mb=env_int(env, "AVATAR_UPLOAD_MAX_MB", d.max_upload_mb, 1, 4096),
            uploads_per_hour=env_int(env, "AVATAR_UPLOADS_PER_HOUR", d.uploads_per_hour, 1, 10000),
            max_avatars=env_int(env, "AVATAR_MAX_AVATARS", d.max_avatars, 1, 100000),
            max_store_mb=env_int(env, "AVATAR_STORE_MAX_MB", d.max_store_mb, 16, 10**7),
            max_running=env_int(env, "AVATAR_PREPARE_JOBS", d.max_running, 1, 64),
            timeout_s=env_int(env, "AVATAR_PREPARE_TIMEOUT_S", d.timeout_s, 10, 3600),
        )


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "code": code, "message": message}, status=status)


class AvatarsApi:
    def __init__(self, library: AvatarLibrary, access: AccessPolicy, settings: UploadSettings,
                 in_use: Callable[[], set[str]], now: Callable[[], float] = time.monotonic,
                 engine_step: EngineStep | None = None) -> None:
        self.library = library
        self.store = library.store
        self.access = access
        self.settings = settings
        self._in_use = in_use
        self._now = now
        self.jobs = AvatarJobs(str(self.store.root.parent), settings.timeout_s, settings.max_running,
                               engine_step, self._discard)
        self._uploads = self.store.root.parent / "avatar-uploads"
        shutil.rmtree(self._uploads, ignore_errors=True)  # left by a crash: nobody waits for them
        self._uploads.mkdir(parents=True, exist_ok=True)
        self._recent: dict[str, deque[float]] = defaultdict(deque)

    def register(self, app: web.Application) -> None:
        app.router.add_get("/api/avatars", self.list)
        app.router.add_post("/api/avatars", self.upload)
        app.router.add_get("/api/avatars/{id}", self.status)
        app.router.add_get("/api/avatars/{id}/thumbnail", self.thumbnail)
        app.router.add_delete("/api/avatars/{id}", self.delete)
        app.on_shutdown.append(lambda _app: self.jobs.aclose())

    # --- reading ------------------------------------------------------------------------------

    def _discard(self, avatar_id: str) -> None:
        """An entry whose engine step failed or timed out: removed, so nothing half-usable stays."""
        try:
            self.store.delete(avatar_id)
        except (AvatarError, OSError) as exc:
            logger.warning("avatar %s could not be removed: %s", avatar_id, exc)

    async def list(self, request: web.Request) -> web.Response:
        pending = [j.to_json() for j in self.jobs.jobs.values() if j.state == "preparing"]
        busy = {j["id"] for j in pending}  # in the store already, but its engine step still runs
        ready = [self._entry(i.to_json()) for i in self.store.list() if i.id not in busy]
        return web.json_response({"default": self.library.default_id, "avatars": ready + pending})

    @staticmethod
    def _entry(info: dict) -> dict:
        info.update(status="ready", progress=1.0, thumbnail=f"/api/avatars/{info['id']}/thumbnail")
        return info

    async def status(self, request: web.Request) -> web.Response:
        avatar_id = request.match_info["id"]
        if not valid_id(avatar_id):
            return _error(404, "unknown_avatar", "no such avatar")
        job = self.jobs.get(avatar_id)
        if job is not None and job.state != "ready":
            return web.json_response(job.to_json())
        if self.store.has(avatar_id):
            return web.json_response(self._entry(self.store.info(avatar_id).to_json()))
        return _error(404, "unknown_avatar", "no such avatar")

    async def thumbnail(self, request: web.Request) -> web.StreamResponse:
        avatar_id = request.match_info["id"]
        if not self.store.has(avatar_id):
            return _error(404, "unknown_avatar", "no such avatar")
        return web.FileResponse(self.store.thumbnail(avatar_id), headers={"Content-Type": "image/jpeg"})

    # --- writing ------------------------------------------------------------------------------

    def _origin_refusal(self, request: web.Request) -> web.Response | None:
        if self.access.origin_ok(request.headers.get("Origin"), request.scheme, request.host):
            return None
        return _error(403, "bad_origin", "this origin may not change the avatars")

    async def delete(self, request: web.Request) -> web.Response:
        if (refused := self._origin_refusal(request)) is not None:
            return refused
        avatar_id = request.match_info["id"]
        if avatar_id in (ASTRONAUT, self.library.default_id):
            return _error(409, "builtin", "the built-in and default avatars cannot be deleted")
        try:
            self.store.delete(avatar_id)
        except AvatarError as exc:
            return _error(404, exc.code, str(exc))
        self.jobs.jobs.pop(avatar_id, None)
        return web.Response(status=204)

    def _quota_refusal(self, address: str) -> web.Response | None:
        s = self.settings
        recent = self._recent[address]
        while recent and self._now() - recent[0] > 3600:
            recent.popleft()
        if len(recent) >= s.uploads_per_hour:
            return _error(429, "quota", f"at most {s.uploads_per_hour} uploads an hour from one address; try later")
        if self.jobs.running(address):
            return _error(429, "busy", "your previous avatar is still being prepared; wait for it")
        if self.jobs.running() >= s.max_running:
            return _error(503, "busy", "the server is preparing other avatars; try again in a minute")
        if len(self.store.list()) >= s.max_avatars:
            return _error(507, "library_full", f"the library holds {s.max_avatars} avatars; delete some first")
        if self.store.size_bytes() > s.max_store_mb * 2**20:
            return _error(507, "library_full", f"the library uses over {s.max_store_mb} MB; delete some avatars first")
        return None

    async def upload(self, request: web.Request) -> web.Response:
        if (refused := self._origin_refusal(request)) is not None:
            return refused
        address = request.remote or "?"
        if (refused := self._quota_refusal(address)) is not None:
            return refused
        limit = self.settings.max_upload_mb * 2**20
        if request.content_length is not None and request.content_length > limit + 64 * 1024:
            return _error(413, "too_large", f"the file is larger than {self.settings.max_upload_mb} MB")
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError, KeyError):
            return _error(400, "bad_upload", "send the file as multipart/form-data with a 'file' field")
        name, saved = "", None
        try:
            while (part := await reader.next()) is not None:
                if part.name == "name":
                    name = clean_name((await part.read_chunk(4096)).decode("utf-8", errors="replace"), "")
                elif part.name == "file" and saved is None:
                    saved = await self._save(part, limit)
                    if isinstance(saved, web.Response):
                        return saved
        except ValueError:
            return _error(400, "bad_upload", "the upload is not valid multipart/form-data")
        if saved is None:
            return _error(400, "bad_upload", "no 'file' field in the upload")
        path, avatar_id, kind = saved
        self._recent[address].append(self._now())
        existing = self.jobs.get(avatar_id)
        if existing is not None and existing.state == "preparing":
            os.remove(path)
            return web.json_response(existing.to_json(), status=202)
        if self.store.has(avatar_id):
            os.remove(path)
            return web.json_response(self._entry(self.store.info(avatar_id).to_json()), status=200)
        job = self.jobs.start(Job(avatar_id, name or f"my {kind}", address), path)
        logger.info("avatar %s upload from %s: preparing", avatar_id, address)
        return web.json_response(job.to_json(), status=202)

    async def _save(self, part, limit: int) -> tuple[str, str, str] | web.Response:  # noqa: ANN001
        """Stream the file part to a generated name, hashing it; refuse it as soon as it is too
        large or its first bytes are not a photo or a video."""
        path = str(self._uploads / os.urandom(12).hex())
        digest, size, kind = hashlib.sha256(), 0, ""
        try:
            with open(path, "wb") as fh:
                while chunk := await part.read_chunk(_CHUNK):
                    if size == 0:
                        head = chunk[:16]
                        try:
                            kind = "photo" if sniff_bytes(head).photo else "video"
                        except AvatarError as exc:
                            raise _Refused(_error(415, exc.code, str(exc))) from exc
                    size += len(chunk)
                    if size > limit:
                        raise _Refused(_error(413, "too_large", f"the file is larger than {self.settings.max_upload_mb} MB"))
                    digest.update(chunk)
                    fh.write(chunk)
        except _Refused as refused:
            os.remove(path)
            return refused.response
        if size == 0:
            os.remove(path)
            return _error(400, "empty", "the file is empty")
        return path, digest.hexdigest()[:16], kind


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response
