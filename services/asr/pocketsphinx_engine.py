"""Embedded-default ASR: pocketsphinx with the en-us model bundled in the package.

Accuracy is rough compared to Vosk, but it is real streaming recognition that runs offline
with nothing to download. Decoders are costly to build (~1 s) and hold per-utterance state,
so the engine keeps a small pool and lends one to each utterance.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from pocketsphinx import Decoder

from services.asr.settings import AsrSettings
from services.media import SAMPLE_RATE

logger = logging.getLogger(__name__)


class _PocketsphinxStream:
    def __init__(self, engine: "PocketsphinxEngine", decoder: Decoder) -> None:
        self._engine = engine
        self._decoder = decoder
        self._done = False
        decoder.start_utt()

    def accept(self, pcm: np.ndarray) -> str:
        self._decoder.process_raw(np.ascontiguousarray(pcm, dtype=np.int16).tobytes(), False, False)
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> str:
        if self._done:
            return ""
        self._done = True
        try:
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
            return hyp.hypstr if hyp is not None else ""
        finally:
            self._engine._release(self._decoder)


class PocketsphinxEngine:
    name = "pocketsphinx"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[Decoder] = [self._new_decoder()]

    @classmethod
    def from_settings(cls, settings: AsrSettings) -> "PocketsphinxEngine":
        return cls()

    @staticmethod
    def _new_decoder() -> Decoder:
        # loglevel FATAL: pocketsphinx otherwise writes hundreds of INFO lines to stderr.
        return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")

    def new_stream(self) -> _PocketsphinxStream:
        with self._lock:
            decoder = self._free.pop() if self._free else None
        if decoder is None:
            logger.info("growing the pocketsphinx decoder pool")
            decoder = self._new_decoder()
        return _PocketsphinxStream(self, decoder)

    def _release(self, decoder: Decoder) -> None:
        with self._lock:
            self._free.append(decoder)
