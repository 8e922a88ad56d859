"""Vosk (Kaldi) streaming speech recognition: the production ASR engine.

The model folder is loaded once (hundreds of MB for the large models) and shared by every
stream; each utterance gets its own ``KaldiRecognizer``. Vosk recognisers are not thread-safe,
but the service drives each stream from one worker thread, which is all we need.

Endpointing belongs to our VAD in the service. Vosk's own endpointer still fires inside a long
utterance (``AcceptWaveform`` returns True and ``Result()`` holds a completed segment); we keep
those segments and prepend them to later partials and to the final text, so nothing the user said
before an internal pause is lost.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from services.asr.engine import AsrModelMissing
from services.asr.settings import AsrSettings
from services.media import SAMPLE_RATE

logger = logging.getLogger(__name__)

FETCH_HINT = "python main.py fetch --profile gpu"
# Kaldi log verbosity: -1 keeps warnings and errors, drops the per-load LOG chatter.
KALDI_LOG_LEVEL = -1


def check_model_folder(path: str) -> None:
    """Raise AsrModelMissing unless ``path`` looks like an unpacked Vosk model."""
    if not path:
        raise AsrModelMissing(
            "ASR engine 'vosk' needs a model folder: set AVATAR_VOSK_MODEL, or fetch the default "
            f"English model with `{FETCH_HINT}`"
        )
    if not os.path.isdir(path):
        raise AsrModelMissing(f"Vosk model folder {path} does not exist; get it with `{FETCH_HINT}`")
    # Every Vosk model has am/ (acoustic model) and conf/; graph/ may be built on the fly.
    missing = [part for part in ("am", "conf") if not os.path.isdir(os.path.join(path, part))]
    if missing:
        raise AsrModelMissing(
            f"Vosk model folder {path} lacks {', '.join(missing)}/ (not an unpacked Vosk model); "
            f"get a good copy with `{FETCH_HINT}`"
        )


class VoskStream:
    """One utterance: feed int16 audio, read partials, finish with the final text."""

    def __init__(self, recognizer: object) -> None:
        self._rec = recognizer
        # Texts of segments Vosk's own endpointer already completed inside this utterance.
        self._completed: list[str] = []

    def accept(self, pcm: np.ndarray) -> str:
        if pcm.dtype != np.int16:
            raise TypeError(f"VoskStream.accept wants 16 kHz int16 audio, got {pcm.dtype}")
        if self._rec.AcceptWaveform(np.ascontiguousarray(pcm).tobytes()):
            text = json.loads(self._rec.Result()).get("text", "")
            if text:
                self._completed.append(text)
            return self._joined("")
        return self._joined(json.loads(self._rec.PartialResult()).get("partial", ""))

    def finish(self) -> str:
        return self._joined(json.loads(self._rec.FinalResult()).get("text", ""))

    def _joined(self, tail: str) -> str:
        return " ".join(part for part in (*self._completed, tail) if part)


class VoskEngine:
    name = "vosk"

    def __init__(self, model_path: str) -> None:
        check_model_folder(model_path)
        # Imported here so that the embedded default never needs the vosk wheel.
        import vosk

        vosk.SetLogLevel(KALDI_LOG_LEVEL)
        self._vosk = vosk
        self._model_path = model_path
        try:
            self._model = vosk.Model(model_path)
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise AsrModelMissing(
                f"Vosk could not load the model in {model_path} ({exc}); it may be incomplete. "
                f"Delete it and re-fetch with `{FETCH_HINT}`"
            ) from exc
        logger.info("VoskEngine(%s): model loaded", model_path)

    @classmethod
    def from_settings(cls, settings: AsrSettings) -> "VoskEngine":
        return cls(settings.vosk_model)

    def new_stream(self) -> VoskStream:
        recognizer = self._vosk.KaldiRecognizer(self._model, SAMPLE_RATE)
        # Words with timings cost time and we only use the text.
        recognizer.SetWords(False)
        recognizer.SetPartialWords(False)
        return VoskStream(recognizer)
