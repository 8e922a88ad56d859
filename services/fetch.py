"""``python main.py fetch``: put the production models in the models folder, once.

Nothing else in the project downloads weights; services only read what this put on disk.

Plain-URL downloads (Vosk and Coqui VITS zips) are made safe for flaky links and full disks:

- the bytes go to ``DIR/.partial/NAME.part``; an interrupted transfer is resumed with an HTTP
  ``Range`` request (automatically a few times, and again on the next run);
- the file is checked against the manifest's sha256 (or size, where the hash is not pinned yet,
  in which case the computed hash is logged so that it can be pinned);
- only a verified file is moved into place (``os.replace``), and an archive is unpacked into a
  scratch folder first and moved into place as a whole, so ``DIR`` never holds half a model;
- a corrupted download is deleted and reported.

Hugging Face repositories go through ``huggingface_hub.snapshot_download`` (it resumes and
verifies by itself) into a scratch folder that is moved into place when complete.

Errors (all ``FetchError``)::

    FetchError
      OfflineError       the host cannot be reached (names the URL; retry with network)
      HttpStatusError    the server answered 4xx/5xx (404: the URL moved)
      ChecksumMismatch   the file's sha256 or size is wrong (the file was deleted)
      LicenseNotAccepted a model with non-commercial terms needs --accept-license NAME

Test hooks: ``AVATAR_FETCH_BASE_URL`` replaces the directory part of every plain URL (the file
name is kept), and ``AVATAR_FETCH_URL_<NAME>`` (NAME upper-cased, '-' and '.' as '_') replaces
one entry's URL.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from avatar_base.files import file_sha256
from services.fetch_manifest import (
    MANIFEST,
    PROFILES,
    WAV2LIP_TERMS,
    Entry,
    HfSnapshot,
    UrlArchive,
    UrlFile,
    UserSupplied,
    entries_for,
)
from services.settings_util import models_dir

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0
# Resume attempts inside one run after the connection drops mid-file.
MAX_ATTEMPTS = 4
PARTIAL_DIR = ".partial"


class FetchError(RuntimeError):
    """A model could not be fetched; the message says which and what to do."""


class OfflineError(FetchError):
    pass


class HttpStatusError(FetchError):
    pass


class ChecksumMismatch(FetchError):
    pass


class LicenseNotAccepted(FetchError):
    pass


@dataclass(frozen=True, slots=True)
class Download:
    """One plain-URL file to fetch and verify."""

    url: str
    part_path: Path
    sha256: str | None
    size_bytes: int | None


@dataclass(frozen=True, slots=True)
class Verified:
    path: Path
    sha256: str
    size_bytes: int


# --- URLs ------------------------------------------------------------------------------------


def entry_url(entry: UrlArchive | UrlFile, env: Mapping[str, str]) -> str:
    per_entry = "AVATAR_FETCH_URL_" + entry.name.upper().replace("-", "_").replace(".", "_")
    if env.get(per_entry):
        return env[per_entry]
    base = env.get("AVATAR_FETCH_BASE_URL")
    if base:
        return base.rstrip("/") + "/" + os.path.basename(urlsplit(entry.url).path)
    return entry.url


# --- plain downloads -------------------------------------------------------------------------


def _open(url: str, offset: int, timeout_s: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": "avatar-fetch/1"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 (https/http only)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            raise  # the caller treats "range not satisfiable" as "already complete"
        exc.close()
        hint = " (the file has moved or the URL is wrong)" if exc.code == 404 else ""
        raise HttpStatusError(f"{url}: HTTP {exc.code} {exc.reason}{hint}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise OfflineError(
            f"cannot reach {url} ({reason}); this needs a network connection: "
            "check it and run the same fetch command again (partial downloads resume)"
        ) from exc


def _transfer(download: Download, progress: bool, timeout_s: float, label: str) -> None:
    """Append the rest of the file to ``part_path``; raise on a dropped connection."""
    offset = download.part_path.stat().st_size if download.part_path.exists() else 0
    try:
        resp = _open(download.url, offset, timeout_s)
    except urllib.error.HTTPError as exc:  # 416: we already hold every byte
        exc.close()
        return
    with resp:
        if offset and resp.status != 206:
            logger.info("fetch %s: server ignored the range request; starting over", label)
            offset = 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else download.size_bytes
        mode = "ab" if offset else "wb"
        with (
            open(download.part_path, mode) as out,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=label, disable=not progress, leave=False,
            ) as bar,
        ):
            received = 0
            while block := resp.read(CHUNK_BYTES):
                out.write(block)
                received += len(block)
                bar.update(len(block))
        if length is not None and received < int(length):
            raise http.client.IncompleteRead(b"", int(length) - received)


def download_verified(
    download: Download, *, progress: bool = True, timeout_s: float = TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS, label: str = "",
) -> Verified:
    """Fetch ``download.url`` into its .part file (resuming), verify it, return its facts.

    The .part file is deleted if its checksum or size is wrong; kept (for a later resume) if the
    connection keeps dropping.
    """
    download.part_path.parent.mkdir(parents=True, exist_ok=True)
    label = label or os.path.basename(download.part_path)
    for attempt in range(1, max_attempts + 1):
        try:
            _transfer(download, progress, timeout_s, label)
            break
        except (http.client.IncompleteRead, ConnectionError, TimeoutError, socket.timeout) as exc:
            held = download.part_path.stat().st_size if download.part_path.exists() else 0
            logger.warning(
                "fetch %s: connection dropped after %d bytes (%r), attempt %d/%d",
                label, held, exc, attempt, max_attempts,
            )
            if attempt == max_attempts:
                raise OfflineError(
                    f"{download.url}: the connection kept dropping ({held} bytes kept in "
                    f"{download.part_path}); run the same fetch command again to resume"
                ) from exc
    return _verify(download, label)


def _verify(download: Download, label: str) -> Verified:
    size = download.part_path.stat().st_size
    if download.size_bytes is not None and size != download.size_bytes:
        download.part_path.unlink()
        raise ChecksumMismatch(
            f"{download.url}: got {size} bytes, expected {download.size_bytes}; "
            "the corrupted download was deleted, run the fetch again"
        )
    digest = file_sha256(download.part_path)
    if download.sha256 is None:
        logger.warning(
            "fetch %s: no pinned checksum in the manifest; %d bytes, sha256=%s (pin it in "
            "services/fetch_manifest.py)", label, size, digest,
        )
    elif digest != download.sha256.lower():
        download.part_path.unlink()
        raise ChecksumMismatch(
            f"{download.url}: sha256 {digest} does not match the expected {download.sha256}; "
            "the corrupted download was deleted, run the fetch again"
        )
    return Verified(download.part_path, digest, size)


def _safe_extract(archive: Path, into: Path) -> None:
    """Unzip, refusing members that would land outside ``into`` (absolute or ``..`` paths)."""
    root = into.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            target = (root / member.filename).resolve()
            if not target.is_relative_to(root):
                raise FetchError(f"{archive}: refusing unsafe path {member.filename!r} in the zip")
        zf.extractall(root)


def _place_dir(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, dest)


def fetch_url_entry(
    entry: UrlArchive | UrlFile, root: Path, env: Mapping[str, str], progress: bool = True
) -> Path:
    dest = root / entry.dest
    if dest.exists():
        logger.info("fetch %s: already at %s", entry.name, dest)
        return dest
    url = entry_url(entry, env)
    scratch = root / PARTIAL_DIR
    download = Download(url, scratch / f"{entry.name}.part", entry.sha256, entry.size_bytes)
    verified = download_verified(download, progress=progress, label=entry.name)
    if isinstance(entry, UrlFile):
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(verified.path, dest)
        return dest
    unpack_dir = scratch / f"{entry.name}.unpack"
    shutil.rmtree(unpack_dir, ignore_errors=True)  # a previous run died while unpacking
    unpack_dir.mkdir(parents=True)
    try:
        _safe_extract(verified.path, unpack_dir)
    except zipfile.BadZipFile as exc:
        verified.path.unlink()
        shutil.rmtree(unpack_dir, ignore_errors=True)
        raise ChecksumMismatch(f"{url}: not a valid zip ({exc}); deleted it, run the fetch again") from exc
    children = list(unpack_dir.iterdir())
    # Vosk and Coqui zips hold one top folder; otherwise the archive's content is the model.
    top = children[0] if len(children) == 1 and children[0].is_dir() else unpack_dir
    _place_dir(top, dest)
    shutil.rmtree(unpack_dir, ignore_errors=True)
    verified.path.unlink()
    return dest


# --- Hugging Face ----------------------------------------------------------------------------

SnapshotDownload = Callable[..., object]


def fetch_hf_entry(
    entry: HfSnapshot, root: Path, env: Mapping[str, str],
    snapshot_download: SnapshotDownload | None = None,
) -> Path:
    dest = root / entry.dest
    if dest.exists():
        logger.info("fetch %s: already at %s", entry.name, dest)
        return dest
    if env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise OfflineError(
            f"HF_HUB_OFFLINE is set, so {entry.repo_id} cannot be fetched; unset it for "
            "the fetch command (services keep it set)"
        )
    if snapshot_download is None:
        from huggingface_hub import snapshot_download
    scratch = root / PARTIAL_DIR / f"{entry.name}.hf"
    scratch.mkdir(parents=True, exist_ok=True)  # reused by a later run: the hub client resumes
    try:
        snapshot_download(
            entry.repo_id,
            revision=entry.revision,
            local_dir=str(scratch),
            allow_patterns=list(entry.allow_patterns),
        )
    except OSError as exc:
        raise OfflineError(
            f"cannot fetch https://huggingface.co/{entry.repo_id} ({exc}); check the network "
            "and run the same fetch command again (it resumes)"
        ) from exc
    source = scratch / entry.subdir if entry.subdir else scratch
    if not source.is_dir() or not any(p.is_file() for p in source.rglob("*")):
        raise FetchError(
            f"{entry.repo_id}: no files matched {list(entry.allow_patterns)}; the repository "
            "layout may have changed"
        )
    # The hub client's resume metadata stays behind; the model folder holds only model files.
    shutil.rmtree(source / ".cache", ignore_errors=True)
    _place_dir(source, dest)
    shutil.rmtree(scratch, ignore_errors=True)
    return dest


# --- user-supplied weights -------------------------------------------------------------------


def describe_user_supplied(entry: UserSupplied, root: Path) -> str:
    path = root / entry.dest
    state = f"found at {path}" if path.is_file() else "not present"
    return (
        f"{entry.name}: {state}. {entry.instructions.format(path=path)}\n"
        f"  Terms: {WAV2LIP_TERMS}"
    )


# --- the command -----------------------------------------------------------------------------


def _size_text(size: int | None) -> str:
    return "size unknown" if size is None else f"{size / 1e6:.0f} MB"


def _list(entries: Sequence[Entry], root: Path, profile: str) -> None:
    print(f"Models for profile {profile!r} in {root} (* = fetched by default):")
    for entry in MANIFEST:
        mark = "*" if entry in entries else " "
        present = "present" if (root / entry.dest).exists() else "missing"
        where = (
            entry.repo_id if isinstance(entry, HfSnapshot)
            else "user-supplied" if isinstance(entry, UserSupplied)
            else entry.url
        )
        print(f" {mark} {entry.name:24s} {present:8s} {entry.license:28s} {where}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python main.py fetch",
        description="Download the production models (with progress, resume and checksums).",
    )
    parser.add_argument("--profile", choices=PROFILES, default="gpu")
    parser.add_argument("--models-dir", default=None, help="default: $AVATAR_MODELS_DIR or ./models")
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME",
        help="fetch only this entry (repeatable; also the way to get optional entries)",
    )
    parser.add_argument("--list", action="store_true", help="show entries and what is present")
    parser.add_argument(
        "--accept-license", action="append", default=[], metavar="NAME",
        help="accept the non-commercial terms of this entry (e.g. coqui-xtts-v2)",
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


def run_fetch(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    snapshot_download: SnapshotDownload | None = None,
) -> int:
    env = os.environ if env is None else env
    args = _parser().parse_args(argv)
    root = Path(args.models_dir or models_dir(env)).resolve()
    known = {e.name: e for e in MANIFEST}
    unknown = [n for n in args.only if n not in known]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    entries = [known[n] for n in args.only] if args.only else list(entries_for(args.profile))
    if args.list:
        _list(entries, root, args.profile)
        return 0
    if not entries:
        print(f"Profile {args.profile!r} needs no downloads (its models ship in packages).")
        return 0
    root.mkdir(parents=True, exist_ok=True)
    failures = 0
    for entry in entries:
        try:
            if isinstance(entry, UserSupplied):
                print(describe_user_supplied(entry, root))
                continue
            print(f"{entry.name} ({entry.license}) -> {root / entry.dest}")
            if isinstance(entry, HfSnapshot):
                if entry.terms_url and entry.name not in args.accept_license:
                    raise LicenseNotAccepted(
                        f"{entry.name} is under {entry.license} ({entry.terms_url}); read the "
                        f"terms, then add --accept-license {entry.name}"
                    )
                fetch_hf_entry(entry, root, env, snapshot_download)
            else:
                fetch_url_entry(entry, root, env, progress=not args.no_progress)
            print(f"  ok: {root / entry.dest}")
        except FetchError as exc:
            failures += 1
            print(f"  FAILED: {exc}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python main.py fetch ...`` (argv without the 'fetch' word)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_fetch(argv)
