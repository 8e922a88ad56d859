"""Model fetcher (services/fetch.py) against a local HTTP server that supports Range requests.

Nothing here touches the internet: AVATAR_FETCH_URL_<NAME> / AVATAR_FETCH_BASE_URL point the
manifest's entries at the test server, and the Hugging Face path gets a fake snapshot_download.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services import fetch
from services.fetch import (
    ChecksumMismatch,
    Download,
    HttpStatusError,
    OfflineError,
    download_verified,
    fetch_hf_entry,
    fetch_url_entry,
    run_fetch,
)
from services.fetch_manifest import HfSnapshot, UrlArchive, UrlFile, entry_named

PAYLOAD = os.urandom(300_000)


@dataclass
class FileServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    # Paths whose first GET is cut off after this many bytes (then served normally).
    drop_first_after: dict[str, int] = field(default_factory=dict)
    ranges_seen: list[str] = field(default_factory=list)
    gets: int = 0


def _handler(state: FileServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.gets += 1
            data = state.files.get(self.path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            range_header = self.headers.get("Range")
            if range_header:
                state.ranges_seen.append(range_header)
                start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = state.drop_first_after.pop(self.path, None)
            if cut is not None:
                # Promise the whole body, send part of it, hang up: a dropped connection.
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def file_server() -> Iterator[tuple[str, FileServerState]]:
    state = FileServerState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-files", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_entry(sha256: str | None, size: int | None = None) -> UrlFile:
    return UrlFile(
        name="test-blob", url="https://example.invalid/models/blob.bin", dest="blobs/blob.bin",
        sha256=sha256, size_bytes=size, license="test", profiles=(),
    )


def test_fetch_good_file_lands_with_correct_checksum(
    file_server: tuple[str, FileServerState], tmp_path: Path
) -> None:
    base, state = file_server
    state.files["/blob.bin"] = PAYLOAD
    env = {"AVATAR_FETCH_BASE_URL": base}
    dest = fetch_url_entry(_file_entry(_sha(PAYLOAD)), tmp_path, env, progress=False)
    assert dest == tmp_path / "blobs" / "blob.bin"
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / ".partial" / "test-blob.part").exists()
    # A second run finds it in place and downloads nothing.
    gets = state.gets
    fetch_url_entry(_file_entry(_sha(PAYLOAD)), tmp_path, env, progress=False)
    assert state.gets == gets


def test_fetch_corrupted_file_is_rejected_and_not_placed(
    file_server: tuple[str, FileServerState], tmp_path: Path
) -> None:
    base, state = file_server
    state.files["/blob.bin"] = PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 0xFF])
    with pytest.raises(ChecksumMismatch) as info:
        fetch_url_entry(
            _file_entry(_sha(PAYLOAD)), tmp_path, {"AVATAR_FETCH_BASE_URL": base}, progress=False
        )
    assert f"{base}/blob.bin" in str(info.value) and "deleted" in str(info.value)
    assert not (tmp_path / "blobs" / "blob.bin").exists()
    assert not (tmp_path / ".partial" / "test-blob.part").exists()


def test_fetch_wrong_size_is_rejected_when_hash_unknown(
    file_server: tuple[str, FileServerState], tmp_path: Path
) -> None:
    base, state = file_server
    state.files["/blob.bin"] = PAYLOAD[:1000]
    with pytest.raises(ChecksumMismatch, match="expected 300000"):
        fetch_url_entry(
            _file_entry(None, size=len(PAYLOAD)), tmp_path, {"AVATAR_FETCH_BASE_URL": base},
            progress=False,
        )
    assert not (tmp_path / "blobs" / "blob.bin").exists()


def test_fetch_unpinned_hash_is_logged(
    file_server: tuple[str, FileServerState], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base, state = file_server
    state.files["/blob.bin"] = PAYLOAD
    with caplog.at_level("WARNING", logger="services.fetch"):
        fetch_url_entry(_file_entry(None), tmp_path, {"AVATAR_FETCH_BASE_URL": base}, progress=False)
    assert _sha(PAYLOAD) in caplog.text and "no pinned checksum" in caplog.text


def test_fetch_truncated_transfer_resumes_with_range(
    file_server: tuple[str, FileServerState], tmp_path: Path
) -> None:
    base, state = file_server
    state.files["/blob.bin"] = PAYLOAD
    state.drop_first_after["/blob.bin"] = 100_000
    dest = fetch_url_entry(
        _file_entry(_sha(PAYLOAD)), tmp_path, {"AVATAR_FETCH_BASE_URL": base}, progress=False
    )
    assert dest.read_bytes() == PAYLOAD
    # The second request asked only for the missing tail.
    assert state.ranges_seen and state.ranges_seen[0] == "bytes=100000-"


def test_fetch_partial_from_an_earlier_run_is_resumed(
    file_server: tuple[str, FileServerState], tmp_path: Path
) -> None:
    base, state = file_server
    state.files["/blob.bin"] = PAYLOAD
    part = tmp_path / ".partial" / "test-blob.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:123_456])
    dest = fetch_url_entry(
        _file_entry(_sha(PAYLOAD)), tmp_path, {"AVATAR_FETCH_BASE_URL": base}, progress=False
    )
    assert dest.read_bytes() == PAYLOAD
    assert state.ranges_seen == ["bytes=123456-"]


def test_fetch_connection_that_keeps_dropping_keeps_the_part(
    file_server: tuple[str, FileServerState], tmp_path: Path
) -> None:
    base, state = file_server
    state.files["/blob.bin"] = PAYLOAD
    state.drop_first_after["/blob.bin"] = 50_000
    part = tmp_path / "p" / "blob.part"
    with pytest.raises(OfflineError, match="run the same fetch command again"):
        download_verified(
            Download(f"{base}/blob.bin", part, _sha(PAYLOAD), None), progress=False, max_attempts=1
        )
    assert part.stat().st_size == 50_000
    # The next run picks up where it stopped.
    verified = download_verified(Download(f"{base}/blob.bin", part, _sha(PAYLOAD), None), progress=False)
    assert verified.sha256 == _sha(PAYLOAD)


def test_fetch_404_is_a_clear_error(file_server: tuple[str, FileServerState], tmp_path: Path) -> None:
    base, _ = file_server
    with pytest.raises(HttpStatusError) as info:
        fetch_url_entry(_file_entry(None), tmp_path, {"AVATAR_FETCH_BASE_URL": base}, progress=False)
    assert "HTTP 404" in str(info.value) and f"{base}/blob.bin" in str(info.value)
    assert not (tmp_path / "blobs").exists()


def test_fetch_unreachable_host_gives_offline_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/models"
    with pytest.raises(OfflineError) as info:
        fetch_url_entry(_file_entry(None), tmp_path, {"AVATAR_FETCH_BASE_URL": url}, progress=False)
    message = str(info.value)
    assert f"{url}/blob.bin" in message and "network" in message and "again" in message


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_fetch_vosk_zip_is_unpacked_atomically(
    file_server: tuple[str, FileServerState], tmp_path: Path
) -> None:
    base, state = file_server
    archive = _zip_bytes({
        "vosk-model-small-en-us-0.15/am/final.mdl": b"acoustic",
        "vosk-model-small-en-us-0.15/conf/model.conf": b"--sample-frequency=16000",
    })
    state.files["/vosk-model-small-en-us-0.15.zip"] = archive
    entry = replace(entry_named("vosk-small-en-us"), sha256=_sha(archive))
    assert isinstance(entry, UrlArchive)
    dest = fetch_url_entry(entry, tmp_path, {"AVATAR_FETCH_BASE_URL": base}, progress=False)
    assert dest == tmp_path / "vosk" / "vosk-model-small-en-us-0.15"
    assert (dest / "am" / "final.mdl").read_bytes() == b"acoustic"
    assert (dest / "conf" / "model.conf").is_file()
    # Nothing is left in the scratch folder, and no half-unpacked folder exists anywhere.
    assert list((tmp_path / ".partial").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "vosk").iterdir()) == ["vosk-model-small-en-us-0.15"]


def test_fetch_zip_with_escaping_path_is_refused(
    file_server: tuple[str, FileServerState], tmp_path: Path
) -> None:
    base, state = file_server
    state.files["/evil.zip"] = _zip_bytes({"../outside.txt": b"x"})
    entry = UrlArchive(
        name="evil", url="https://example.invalid/evil.zip", dest="evil", sha256=None,
        size_bytes=None, license="test", profiles=(),
    )
    with pytest.raises(fetch.FetchError, match="unsafe path"):
        fetch_url_entry(entry, tmp_path / "models", {"AVATAR_FETCH_BASE_URL": base}, progress=False)
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "models" / "evil").exists()


def test_fetch_cli_per_entry_url_override_and_exit_codes(
    file_server: tuple[str, FileServerState], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, state = file_server
    archive = _zip_bytes({"model/am/final.mdl": b"a", "model/conf/model.conf": b"c"})
    state.files["/mirror/lgraph.zip"] = archive
    env = {"AVATAR_FETCH_URL_VOSK_EN_US_LGRAPH": f"{base}/mirror/lgraph.zip"}
    argv = ["--only", "vosk-en-us-lgraph", "--models-dir", str(tmp_path), "--no-progress"]
    assert run_fetch(argv, env=env) == 0
    assert (tmp_path / "vosk" / "vosk-model-en-us-0.22-lgraph" / "am" / "final.mdl").is_file()
    # A 404 makes the command fail with the URL on stderr.
    env = {"AVATAR_FETCH_URL_VOSK_SMALL_EN_US": f"{base}/missing.zip"}
    assert run_fetch(["--only", "vosk-small-en-us", "--models-dir", str(tmp_path)], env=env) == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_fetch_cli_never_downloads_wav2lip_and_shows_terms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_fetch(["--only", "wav2lip", "--models-dir", str(tmp_path)], env={}) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "wav2lip" / "wav2lip_gan.pth") in out
    assert "non-commercial" in out and "never downloads" in out
    assert not (tmp_path / "wav2lip").exists()


def test_fetch_cli_list_shows_profile_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_fetch(["--list", "--profile", "gpu", "--models-dir", str(tmp_path)], env={}) == 0
    out = capsys.readouterr().out
    assert re.search(r"\* qwen2\.5-7b-instruct\s+missing", out)
    assert re.search(r"  coqui-xtts-v2\s+missing", out), "xtts is optional, not default"
    assert run_fetch(["--only", "nope", "--models-dir", str(tmp_path)], env={}) == 2


def test_fetch_hf_snapshot_is_placed_atomically(tmp_path: Path) -> None:
    calls: list[tuple[str, dict]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: object) -> str:
        calls.append((repo_id, kwargs))
        local = Path(str(kwargs["local_dir"]))
        (local / "musetalkV15").mkdir(parents=True, exist_ok=True)
        (local / "musetalkV15" / "unet.pth").write_bytes(b"weights")
        (local / ".cache").mkdir(exist_ok=True)
        return str(local)

    entry = entry_named("musetalk-v15")
    assert isinstance(entry, HfSnapshot)
    dest = fetch_hf_entry(entry, tmp_path, {}, fake_snapshot_download)
    assert dest == tmp_path / "musetalk" / "musetalkV15"
    assert (dest / "unet.pth").read_bytes() == b"weights"
    repo_id, kwargs = calls[0]
    assert repo_id == "TMElyralab/MuseTalk" and kwargs["allow_patterns"] == ["musetalkV15/*"]
    assert not (tmp_path / ".partial" / "musetalk-v15.hf").exists()


def test_fetch_hf_refuses_when_hub_offline_and_xtts_needs_license(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = entry_named("qwen2.5-7b-instruct")
    assert isinstance(entry, HfSnapshot)
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        fetch_hf_entry(entry, tmp_path, {"HF_HUB_OFFLINE": "1"}, lambda *a, **k: None)

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("XTTS was downloaded without --accept-license")

    argv = ["--only", "coqui-xtts-v2", "--models-dir", str(tmp_path)]
    assert run_fetch(argv, env={}, snapshot_download=must_not_run) == 1
    assert "--accept-license coqui-xtts-v2" in capsys.readouterr().err
