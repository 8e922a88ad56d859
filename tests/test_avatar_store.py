"""The avatar store: one preparation for every engine, kept by content hash, atomic, and a
clear refusal (never a traceback) for every kind of bad file."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from services.avatar.errors import AvatarError
from services.avatar.prepare import ensure_astronaut, ensure_default, prepare_file
from services.avatar.store import ASTRONAUT, AvatarStore
from services.lipsync.avatar_steps import wav2lip_avatar
from bench.avatar_files import bad_files, my_face, write_photo, write_video


def test_the_astronaut_is_always_there_and_survives_a_restart(tmp_path):
    store = AvatarStore(str(tmp_path))
    ensure_astronaut(store)
    photo = prepare_file(store, str(write_photo(tmp_path / "me.jpg", my_face())), "Me")
    reopened = AvatarStore(str(tmp_path))  # a restart: nothing is prepared again
    assert [a.id for a in reopened.list()] == [ASTRONAUT, photo.id]
    assert reopened.info(photo.id).name == "Me"
    loaded = reopened.load(photo.id)
    assert loaded.loop.frame_size == (640, 560) and len(loaded.loop) == 1
    assert (tmp_path / "avatars" / photo.id / "thumb.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    with pytest.raises(AvatarError) as refused:
        reopened.delete(ASTRONAUT)
    assert refused.value.code == "builtin"
    reopened.delete(photo.id)
    assert [a.id for a in reopened.list()] == [ASTRONAUT]


def test_same_content_is_one_entry_and_an_interrupted_preparation_leaves_nothing(tmp_path, monkeypatch):
    store = AvatarStore(str(tmp_path))
    source = write_photo(tmp_path / "me.jpg", my_face())
    copy = tmp_path / "renamed.bin"
    copy.write_bytes(source.read_bytes())

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt  # the process stops mid-write

    monkeypatch.setattr("services.avatar.store.np.save", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_file(store, str(source))
    monkeypatch.undo()
    assert not [p for p in (tmp_path / "avatars").iterdir()]  # no entry, no half-written folder
    first = prepare_file(store, str(source))
    assert prepare_file(store, str(copy)).id == first.id  # the name is not the key, the content is
    # A crashed process's folder from long ago is cleared when the store opens again.
    stale = tmp_path / "avatars" / ".tmp-0123456789abcdef-1-x"
    stale.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    AvatarStore(str(tmp_path))
    assert not stale.exists()


def test_video_loop_faces_per_frame_and_the_engine_step_is_kept(tmp_path, monkeypatch):
    store = AvatarStore(str(tmp_path))
    video = write_video(tmp_path / "idle.mp4", 1.2, (640, 360), codec="mpeg4")
    info = prepare_file(store, str(video))
    prepared = store.load(info.id)
    assert info.kind == "video" and len(prepared.loop) == 30 - 8  # crossfaded forward loop
    assert prepared.faces.shape == (22, 4) and (prepared.faces[:, 2] >= 40).all()
    assert np.ptp(prepared.faces[:, 0]) >= 4  # tracked per frame: the head drifts
    first = wav2lip_avatar(store, prepared, None)
    assert first.crops.shape == (22, 96, 96, 3)
    monkeypatch.setattr("wav2lip.avatar.prepare_from_frames", lambda *a, **k: pytest.fail("step not reused"))
    again = wav2lip_avatar(store, store.load(info.id), None)
    np.testing.assert_array_equal(first.crops, again.crops)


def test_several_faces_say_which_one_is_used(tmp_path):
    two = np.concatenate([my_face(), my_face()[:, ::-1]], axis=1)
    info = prepare_file(AvatarStore(str(tmp_path)), str(write_photo(tmp_path / "two.jpg", two)))
    assert info.warnings and "faces found; the largest" in info.warnings[0]


def test_every_bad_file_gets_its_clear_error(tmp_path):
    store = AvatarStore(str(tmp_path))
    files = bad_files(tmp_path / "bad")
    assert len(files) == 20
    for name, (path, code) in files.items():
        with pytest.raises(AvatarError) as refused:
            prepare_file(store, str(path))
        assert refused.value.code == code, (name, str(refused.value))
        assert "Traceback" not in str(refused.value) and str(path) not in str(refused.value)
    assert [a.id for a in store.list()] == []


def test_the_server_setting_names_its_file(tmp_path):
    with pytest.raises(AvatarError, match="nobody.png"):
        ensure_default(AvatarStore(str(tmp_path)), str(tmp_path / "nobody.png"))


def test_the_type_comes_from_the_content():
    from services.avatar.sniff import sniff_bytes

    assert sniff_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 12).kind == "jpeg"
    assert sniff_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 4).kind == "mp4"
    for head in (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 4, b"GIF89a" + b"\x00" * 10, b"<html>" + b"\x00" * 10):
        with pytest.raises(AvatarError) as refused:
            sniff_bytes(head)
        assert refused.value.code == "unsupported"


def test_an_entry_of_an_older_layout_is_upgraded_in_place_not_lost(tmp_path):
    import json

    from services.avatar.store import LAYOUT_VERSION

    store = AvatarStore(str(tmp_path))
    ensure_astronaut(store)
    folder = store.folder(ASTRONAUT)
    # What version 1 wrote: no teeth_top_y in the geometry, version 1 in avatar.json.
    geometry = json.loads((folder / "geometry.json").read_text())
    del geometry["teeth_top_y"]
    (folder / "geometry.json").write_text(json.dumps(geometry))
    info = json.loads((folder / "avatar.json").read_text())
    info["version"] = 1
    (folder / "avatar.json").write_text(json.dumps(info))

    avatar = AvatarStore(str(tmp_path)).load(ASTRONAUT)
    assert avatar.info.version == LAYOUT_VERSION
    assert avatar.geometry.teeth_visible and avatar.geometry.teeth_top_y > 0  # the astronaut smiles with teeth
    assert json.loads((folder / "avatar.json").read_text())["version"] == LAYOUT_VERSION
    assert "teeth_top_y" in json.loads((folder / "geometry.json").read_text())


def test_a_store_without_a_cache_folder_owns_its_temporary_folder():
    import gc

    from services.avatar.library import open_store

    first, second = open_store(""), open_store("")
    assert first.root != second.root  # each its own: no state shared through the module
    folder = first.root.parent
    assert folder.is_dir()
    del first
    gc.collect()
    assert not folder.exists() and second.root.is_dir()  # gone with its store, the other kept
