"""Build the configured lip-sync engine. Engine modules are imported lazily, so the embedded
default never imports torch-heavy code it does not use."""

from __future__ import annotations

from services.avatar.store import AvatarStore
from services.lipsync.engine import LipsyncEngine
from services.lipsync.settings import LipsyncSettings


def build_engine(settings: LipsyncSettings, store: AvatarStore | None = None) -> LipsyncEngine:
    """The configured engine on the server's default avatar of ``store`` (the cache folder's
    when not given)."""
    if settings.engine == "animation":
        from services.lipsync.animation_engine import AnimationEngine

        return AnimationEngine.from_settings(settings, store)
    if settings.engine == "wav2lip":
        from services.lipsync.wav2lip_engine import Wav2LipEngine

        return Wav2LipEngine.from_settings(settings, store)
    if settings.engine == "musetalk":
        from services.lipsync.musetalk_engine import MuseTalkEngine

        return MuseTalkEngine.from_settings(settings, store)
    raise ValueError(f"unknown lip-sync engine {settings.engine!r}")
