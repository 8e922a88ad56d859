"""Lip-sync draws each session with its own avatar from the store: two sessions at once on two
faces, sessions on one face share its engine, and a session waits (never drawn with another
face) while its avatar loads."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services import messages as m
from services.avatar.library import default_avatar, open_store
from services.avatar.prepare import prepare_file
from services.lipsync.animation_engine import AnimationEngine
from services.lipsync.avatars import SessionEngines
from services.lipsync.service import LipsyncService
from bench.avatar_files import my_face, write_photo
from tests.fakes import RecordingSender


async def _until(cond, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def service(tmp_path):
    store = open_store(str(tmp_path))
    default = default_avatar(store, "")
    mine = prepare_file(store, str(write_photo(tmp_path / "me.jpg", my_face())))
    engine = AnimationEngine(default.loop, default.geometry)
    loads: list[str] = []

    def load(avatar: str, progress=None):
        loads.append(avatar)
        return engine.with_avatar(store, store.load(avatar), progress)

    engines = SessionEngines(engine, default.id, load)
    out, events = RecordingSender(), RecordingSender()
    svc = LipsyncService(engines, out, events)
    task = asyncio.create_task(svc._schedule())
    yield svc, out, events, mine.id, store, loads
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await svc.aclose()


def _speech(session: str, seconds: float = 0.4) -> m.SpeechAudio:
    t = np.arange(int(16000 * seconds)) / 16000
    pcm = (12000 * np.sin(2 * np.pi * 170 * t)).astype(np.int16)
    return m.SpeechAudio(session, 1, 0, "Hi.", pcm, True)


def _frames(out: RecordingSender, session: str) -> list[m.AvatarFrame]:
    return [f for f in out.of(m.AvatarFrame) if f.session == session]


async def test_two_sessions_two_faces_at_once_and_one_face_is_shared(service):
    svc, out, events, mine, store, loads = service
    for session, avatar in (("me", mine), ("me-too", mine), ("other", "astronaut")):
        svc.on_avatar(m.SessionAvatar(session, 0, avatar))
        svc.on_credit(m.FlowCredit(session, 1, 0, 10, True))
        await svc.handle(_speech(session))
    await _until(lambda: all(len(_frames(out, s)) == 10 for s in ("me", "me-too", "other")))
    assert loads == [mine]  # loaded once for both sessions on it
    assert svc.engines.engine("me") is svc.engines.engine("me-too") is not svc.engines.engine("other")
    assert _frames(out, "me")[0].image.shape == (640, 560, 3)  # the uploaded photo's size
    assert _frames(out, "other")[0].image.shape == (512, 512, 3)  # the astronaut's
    # The picture is theirs: close to their photo, far from the astronaut.
    theirs = np.asarray(store.load(mine).loop.frames[0], np.float32)
    drawn = _frames(out, "me")[0].image.astype(np.float32)
    assert np.abs(drawn - theirs).mean() < 12
    svc.on_close("me")
    svc.on_close("me-too")
    assert mine not in svc.engines._engines  # dropped with its last session


async def test_an_unknown_avatar_falls_back_with_a_clear_error(service):
    svc, out, events, _mine, _store, _loads = service
    svc.on_avatar(m.SessionAvatar("s", 0, "0123456789abcdef"))
    await _until(lambda: events.of(m.StageError))
    assert "could not be loaded" in events.of(m.StageError)[0].message
    svc.on_credit(m.FlowCredit("s", 1, 0, 5, True))
    await svc.handle(_speech("s"))
    await _until(lambda: len(_frames(out, "s")) == 5)
    assert _frames(out, "s")[0].image.shape == (512, 512, 3)


async def test_an_upload_is_prepared_with_progress_once_and_a_session_on_it_shares_the_work(service, tmp_path):
    svc, out, events, _mine, store, loads = service
    video = prepare_file(store, str(write_photo(tmp_path / "other.jpg", my_face()[:, ::-1].copy())))
    svc.on_prepare(m.PrepareAvatar("", 0, video.id))
    svc.on_prepare(m.PrepareAvatar("", 0, video.id))  # a repeat (the gateway re-asks): no second run
    svc.on_avatar(m.SessionAvatar("s", 0, video.id))  # a session choosing it meanwhile waits for the same work
    await _until(lambda: any(e.state == "ready" for e in events.of(m.AvatarPrepared)))
    told = events.of(m.AvatarPrepared)
    assert told[0].state == "preparing" and told[0].engine == "animation" and told[-1].state == "ready"
    assert all(e.avatar == video.id and 0.0 <= e.progress <= 1.0 for e in told)
    await _until(lambda: svc.engines.ready("s"))
    assert loads.count(video.id) == 1  # one preparation, shared by the upload and the session
    svc.on_close("s")
    assert video.id not in svc.engines._engines  # prepared, not held: no session shows it


async def test_a_preparation_that_fails_says_why(service):
    svc, _out, events, _mine, _store, _loads = service
    svc.on_prepare(m.PrepareAvatar("", 0, "0123456789abcdef"))
    await _until(lambda: any(e.state == "failed" for e in events.of(m.AvatarPrepared)))
    failed = [e for e in events.of(m.AvatarPrepared) if e.state == "failed"][0]
    assert "could not prepare" in failed.message and "Traceback" not in failed.message
