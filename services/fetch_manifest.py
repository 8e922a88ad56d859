"""What ``python main.py fetch`` can put in the models folder, per profile.

Three kinds of entry:

- ``UrlArchive`` / ``UrlFile``: one file over HTTPS, checked against a sha256, resumable. Archives
  are unpacked. Where ``sha256`` is None we do not know the published hash: the fetcher checks the
  size (when known), logs the hash it computed, and says so, so that the hash can be pinned here.
- ``HfSnapshot``: a Hugging Face model repository, fetched with huggingface_hub (which places
  files atomically and checks each file's size against the hub's metadata, but does not hash
  them), restricted to ``allow_patterns``.
- ``UserSupplied``: never downloaded for the user (Wav2Lip: non-commercial terms). The fetcher
  prints where the user's own file goes and the terms.

Destinations are relative to the models folder and match the defaults in the services'
settings (``services/*/settings.py``), so a fetched model is found without further config.

Known hashes: the archive hashes below are not pinned yet (we could not obtain them from a
trusted source offline), so their ``sha256`` is None = "verify the size if known and report the
hash". Pin them after a first verified download (the fetcher prints them). The S3FD weights are
pinned: see the note at their entry.
"""

from __future__ import annotations

from dataclasses import dataclass

PROFILES = ("cpu", "gpu")


@dataclass(frozen=True, slots=True)
class UrlArchive:
    """A zip over HTTPS, unpacked into ``dest`` (its single top folder becomes ``dest``)."""

    name: str
    url: str
    dest: str
    sha256: str | None
    size_bytes: int | None
    license: str
    profiles: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True, slots=True)
class UrlFile:
    """A single file over HTTPS, placed at ``dest``."""

    name: str
    url: str
    dest: str
    sha256: str | None
    size_bytes: int | None
    license: str
    profiles: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True, slots=True)
class HfSnapshot:
    """Files of a Hugging Face repository, placed in the folder ``dest``."""

    name: str
    repo_id: str
    dest: str
    allow_patterns: tuple[str, ...]
    license: str
    profiles: tuple[str, ...]
    revision: str = "main"
    # A folder inside the repository that becomes ``dest`` ("" = the whole snapshot).
    subdir: str = ""
    # Licences that forbid commercial use need an explicit --accept-license NAME.
    terms_url: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class UserSupplied:
    """Weights we must not download for the user; we say where their own copy goes."""

    name: str
    dest: str
    license: str
    profiles: tuple[str, ...]
    instructions: str


Entry = UrlArchive | UrlFile | HfSnapshot | UserSupplied

WAV2LIP_TERMS = (
    "Wav2Lip's pretrained weights are released for personal, research and non-commercial use "
    "only; commercial use needs a licence from the authors (see the LICENSE of "
    "https://github.com/Rudrabha/Wav2Lip and https://synclabs.so). This tool never downloads "
    "them for you."
)

MANIFEST: tuple[Entry, ...] = (
    # --- ASR ---------------------------------------------------------------------------------
    UrlArchive(
        name="vosk-small-en-us",
        url="https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip",
        dest="vosk/vosk-model-small-en-us-0.15",
        sha256=None,  # not pinned: see the module docstring
        size_bytes=None,
        license="Apache-2.0",
        profiles=("cpu", "gpu"),
        note="default English Vosk model (about 40 MB)",
    ),
    UrlArchive(
        name="vosk-en-us-lgraph",
        url="https://alphacephei.com/vosk/models/vosk-model-en-us-0.22-lgraph.zip",
        dest="vosk/vosk-model-en-us-0.22-lgraph",
        sha256=None,
        size_bytes=None,
        license="Apache-2.0",
        profiles=(),
        note="more accurate English model (about 130 MB); set AVATAR_VOSK_MODEL to use it",
    ),
    # --- LLM ---------------------------------------------------------------------------------
    HfSnapshot(
        name="qwen2.5-7b-instruct",
        repo_id="Qwen/Qwen2.5-7B-Instruct",
        dest="llm/Qwen2.5-7B-Instruct",
        allow_patterns=("*.json", "*.safetensors", "merges.txt", "vocab.json", "LICENSE"),
        license="Apache-2.0",
        profiles=("gpu",),
        note="about 15 GB in bfloat16",
    ),
    # --- TTS ---------------------------------------------------------------------------------
    # Coqui publishes its VITS models as zips on GitHub releases (the URLs in coqui-tts's own
    # model catalogue, TTS/.models.json).
    UrlArchive(
        name="coqui-vits-ljspeech",
        url=(
            "https://github.com/coqui-ai/TTS/releases/download/v0.6.1_models/"
            "tts_models--en--ljspeech--vits.zip"
        ),
        dest="tts/tts_models--en--ljspeech--vits",
        sha256=None,
        size_bytes=None,
        license="Apache-2.0",
        profiles=("gpu",),
        note="single English voice; needs espeak-ng for phonemes",
    ),
    UrlArchive(
        name="coqui-vits-vctk",
        url=(
            "https://github.com/coqui-ai/TTS/releases/download/v0.6.1_models/"
            "tts_models--en--vctk--vits.zip"
        ),
        dest="tts/tts_models--en--vctk--vits",
        sha256=None,
        size_bytes=None,
        license="Apache-2.0",
        profiles=(),
        note="109 English speakers (AVATAR_TTS_SPEAKER=p225 ...)",
    ),
    HfSnapshot(
        name="coqui-xtts-v2",
        repo_id="coqui/XTTS-v2",
        dest="tts/tts_models--multilingual--multi-dataset--xtts_v2",
        allow_patterns=("config.json", "model.pth", "vocab.json", "speakers_xtts.pth", "LICENSE*"),
        license="CPML (Coqui Public Model License: non-commercial)",
        profiles=(),
        terms_url="https://coqui.ai/cpml",
        note="streaming multilingual TTS; about 1.9 GB",
    ),
    # --- Lip-sync ----------------------------------------------------------------------------
    HfSnapshot(
        name="musetalk-v15",
        repo_id="TMElyralab/MuseTalk",
        dest="musetalk/musetalkV15",
        allow_patterns=("musetalkV15/*",),
        subdir="musetalkV15",
        license="MIT",
        profiles=("gpu",),
        note="MuseTalk 1.5 UNet and its config",
    ),
    HfSnapshot(
        name="musetalk-sd-vae",
        repo_id="stabilityai/sd-vae-ft-mse",
        dest="musetalk/sd-vae",
        allow_patterns=("config.json", "diffusion_pytorch_model.safetensors"),
        license="MIT",
        profiles=("gpu",),
        note="the VAE MuseTalk works in",
    ),
    HfSnapshot(
        name="musetalk-whisper-tiny",
        repo_id="openai/whisper-tiny",
        dest="musetalk/whisper",
        allow_patterns=("*.json", "model.safetensors", "merges.txt", "vocab.json"),
        license="Apache-2.0",
        profiles=("gpu",),
        note="audio features for MuseTalk",
    ),
    # The face detector Wav2Lip and MuseTalk prepare avatars with (services/face). The file
    # name carries the first 10 hex digits of its sha256 (torch.hub's naming convention); the
    # full hash and size are the ones several independent projects record for this URL, and
    # they agree with that prefix. services/face checks the hash again before loading.
    UrlFile(
        name="s3fd",
        url="https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
        dest="face/s3fd-619a316812.pth",
        sha256="619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543",
        size_bytes=89_843_225,
        license="BSD-3-Clause (face-alignment)",
        profiles=("gpu",),
        note=(
            "S3FD face detector weights as published by 1adrianb/face-alignment (BSD-3-Clause), "
            "converted from sfzhang15/SFD, trained on WIDER FACE; about 90 MB"
        ),
    ),
    UserSupplied(
        name="wav2lip",
        dest="wav2lip/wav2lip_gan.pth",
        license="non-commercial (research) only",
        profiles=("gpu",),
        instructions=(
            "Download wav2lip_gan.pth (or wav2lip.pth) yourself from the links in "
            "https://github.com/Rudrabha/Wav2Lip and put it at {path}, "
            "or point AVATAR_WAV2LIP_CHECKPOINT at your copy."
        ),
    ),
)


def entries_for(profile: str) -> tuple[Entry, ...]:
    """The entries a profile fetches by default (others only with --only NAME)."""
    return tuple(e for e in MANIFEST if profile in e.profiles)


def entry_named(name: str) -> Entry:
    for entry in MANIFEST:
        if entry.name == name:
            return entry
    raise KeyError(name)
