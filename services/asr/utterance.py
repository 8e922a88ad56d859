"""One session's listening state: VAD, endpointing, pre-roll, and the recogniser stream.

All methods are blocking (VAD and decoder calls) and run on the ASR worker thread.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.asr.endpointer import VAD_WINDOW_SAMPLES, Endpointer, EndpointerConfig, VadEvent
from services.asr.engine import AsrEngine, RecognizerStream
from services.asr.settings import AsrSettings
from services.media import SAMPLE_RATE

# process() with nothing new: finish what an onset left pending.
NO_AUDIO = np.zeros(0, np.int16)


class SpeechProbability(Protocol):
    def __call__(self, window: np.ndarray) -> float:
        """Probability that a 512-sample int16 window is speech."""


@dataclass(frozen=True, slots=True)
class Onset:
    pass


@dataclass(frozen=True, slots=True)
class Partial:
    text: str


@dataclass(frozen=True, slots=True)
class Final:
    text: str
    # Wall-clock time the user stopped speaking (before the trailing silence was waited out).
    speech_end_unix_s: float
    endpoint_ms: float
    decode_ms: float


@dataclass(frozen=True, slots=True)
class Tentative:
    """Silence after speech: the utterance so far, decoded while the endpoint is waited out."""

    text: str
    speech_end_unix_s: float


@dataclass(frozen=True, slots=True)
class Resumed:
    """Speech again after a Tentative: that text is not the end of the utterance."""


AsrEvent = Onset | Partial | Final | Tentative | Resumed


class SileroVad:
    """silero-vad (ONNX flavour: ~0.3 ms per window here, 10x the TorchScript one)."""

    def __init__(self) -> None:
        import torch
        from silero_vad import load_silero_vad

        self._torch = torch
        self._model = load_silero_vad(onnx=True)

    def __call__(self, window: np.ndarray) -> float:
        x = self._torch.from_numpy(window.astype(np.float32) / 32768.0)
        return float(self._model(x, SAMPLE_RATE).item())


class UtteranceTracker:
    def __init__(
        self,
        engine: AsrEngine,
        vad: SpeechProbability,
        settings: AsrSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._vad = vad
        self._settings = settings
        self._clock = clock
        self._endpointer = Endpointer(
            EndpointerConfig(
                threshold=settings.vad_threshold,
                onset_ms=settings.onset_ms,
                silence_ms=settings.endpoint_silence_ms,
                guard_threshold=settings.barge_in_threshold,
                guard_onset_ms=settings.barge_in_onset_ms,
            )
        )
        self._pending = np.zeros(0, dtype=np.int16)
        preroll_windows = max(1, settings.preroll_ms * SAMPLE_RATE // 1000 // VAD_WINDOW_SAMPLES)
        self._preroll: deque[np.ndarray] = deque(maxlen=preroll_windows)
        self._stream: RecognizerStream | None = None
        # An onset was reported and the recogniser has yet to start (see process()).
        self._stream_pending = False
        self._speech_samples = 0
        self._last_partial = ""
        # Media time (samples heard) rather than wall time, so results do not depend on how
        # fast audio is fed (real time from a browser, faster in tests).
        self._samples_seen = 0
        self._last_partial_at = 0
        self._last_voiced_end = 0
        # Speculative end of turn: the newest partial (streams with partials), the silent windows
        # since the last voiced one, and the tentative text sent for this pause (if any).
        self._latest_partial = ""
        self._gap_windows = 0
        self._tentative: str | None = None
        self._tentative_windows = (
            -(-settings.tentative_silence_ms * SAMPLE_RATE // 1000 // VAD_WINDOW_SAMPLES)
            if settings.tentative_silence_ms
            else 0
        )
        # The pause's window at which the tentative text is decoded (one or more before it is
        # sent), and that text while it waits for the rest of the tentative silence.
        ahead = -(-settings.tentative_decode_ahead_ms * SAMPLE_RATE // 1000 // VAD_WINDOW_SAMPLES)
        self._decode_window = max(1, self._tentative_windows - ahead)
        self._early: str | None = None
        # Level floor of the echo guard, as a mean square of int16 samples.
        self._guard_floor = (32768.0 * 10 ** (settings.barge_in_min_dbfs / 20)) ** 2

    def process(self, pcm: np.ndarray, avatar_audible: bool = False) -> list[AsrEvent]:
        """Feed audio; returns the events it caused.

        Returns early, right after an onset, leaving the rest of the audio pending: starting
        the recogniser (and feeding it the pre-roll) costs 100+ ms on a busy CPU, and the
        onset must reach the gateway before that, since it drives barge-in. Call again
        (with no new audio) while ``has_pending()``.
        """
        events: list[AsrEvent] = []
        if len(pcm):
            self._pending = np.concatenate([self._pending, pcm.astype(np.int16, copy=False)])
        if self._stream_pending:
            self._start_stream()
        while len(self._pending) >= VAD_WINDOW_SAMPLES:
            window = self._pending[:VAD_WINDOW_SAMPLES]
            self._pending = self._pending[VAD_WINDOW_SAMPLES:]
            events.extend(self._window(window, avatar_audible))
            if self._stream_pending:
                break
        return events

    def has_pending(self) -> bool:
        return self._stream_pending or len(self._pending) >= VAD_WINDOW_SAMPLES

    def process_recording(self, pcm: np.ndarray, packet_samples: int = 320) -> list[AsrEvent]:
        """A whole recording, fed in packets (20 ms, as the gateway forwards the microphone)
        with every pending step finished after each: what the service does between its awaits,
        for benchmarks and tests that have the audio up front."""
        events: list[AsrEvent] = []
        for start in range(0, len(pcm), packet_samples):
            events += self.process(pcm[start : start + packet_samples])
            while self.has_pending():
                events += self.process(NO_AUDIO)
        return events

    def _start_stream(self) -> None:
        self._stream = self._engine.new_stream()
        for old in self._preroll:
            self._stream.accept(old)
        self._preroll.clear()
        self._stream_pending = False

    def _window(self, window: np.ndarray, guarded: bool = False) -> list[AsrEvent]:
        prob = self._vad(window)
        loud = True
        if guarded:
            loud = float(np.mean(np.square(window, dtype=np.float64))) >= self._guard_floor
        event = self._endpointer.update(prob, guarded, loud)
        self._samples_seen += len(window)
        now = self._samples_seen
        if prob >= self._settings.vad_threshold:
            self._last_voiced_end = now
        out: list[AsrEvent] = []
        if event is VadEvent.ONSET:
            # The recogniser starts on the next call, from the pre-roll (this window included).
            self._preroll.append(window)
            self._stream_pending = True
            self._speech_samples = len(window)
            self._last_partial = ""
            self._last_partial_at = now
            out.append(Onset())
            return out
        if self._stream is None:
            self._preroll.append(window)
            return out
        partial = self._stream.accept(window)
        if partial:
            self._latest_partial = partial
        self._speech_samples += len(window)
        too_long = self._speech_samples >= self._settings.max_utterance_s * SAMPLE_RATE
        if event is VadEvent.END or too_long:
            out.append(self._finish(now))
            if too_long:
                self._endpointer.reset()
            return out
        out.extend(self._speculate(prob))
        if (
            partial
            and partial != self._last_partial
            and (now - self._last_partial_at) * 1000 >= self._settings.partial_interval_ms * SAMPLE_RATE
        ):
            self._last_partial = partial
            self._last_partial_at = now
            out.append(Partial(partial))
        return out

    def _speculate(self, prob: float) -> list[AsrEvent]:
        """Count the pause; at ``tentative_silence_ms`` decode what was said, once per pause."""
        if not self._tentative_windows:
            return []
        if self._endpointer.stays_voiced(prob):
            self._gap_windows = 0
            self._early = None  # decoded ahead, but the pause did not last: never sent
            if self._tentative is not None:
                self._tentative = None
                return [Resumed()]
            return []
        self._gap_windows += 1
        if self._tentative is not None:
            return []
        if self._gap_windows == self._decode_window:
            to_come = (self._tentative_windows - self._gap_windows) * VAD_WINDOW_SAMPLES
            self._early = self._peek(to_come)
        if self._gap_windows != self._tentative_windows:
            return []
        text = self._early if self._early is not None else self._peek()
        self._early = None
        self._tentative = text
        silent_s = self._gap_windows * VAD_WINDOW_SAMPLES / SAMPLE_RATE
        return [Tentative(text, self._clock() - silent_s)] if text else []

    def _peek(self, silence_samples: int = 0) -> str:
        assert self._stream is not None
        peek = getattr(self._stream, "peek", None)
        return (peek(silence_samples) if peek is not None else self._latest_partial).strip()

    def _finish(self, now: int) -> Final:
        assert self._stream is not None
        started = time.perf_counter()
        close = getattr(self._stream, "close", None)
        if self._tentative and close is not None:
            # Only silence since the tentative decode (speech would have reset it): that text is
            # the utterance, and decoding it again would only add latency.
            text = self._tentative
            close()
        else:
            text = self._stream.finish().strip()
        self._tentative = None
        self._early = None
        self._gap_windows = 0
        self._latest_partial = ""
        self._stream = None
        decode_ms = (time.perf_counter() - started) * 1000
        endpoint_ms = max(0, now - self._last_voiced_end) * 1000 / SAMPLE_RATE
        speech_end_unix = self._clock() - (endpoint_ms + decode_ms) / 1000
        return Final(text, speech_end_unix, endpoint_ms, decode_ms)

    def end_of_audio(self) -> list[AsrEvent]:
        """The microphone stopped (the call ended, or its audio stopped arriving) mid-utterance:
        close the utterance with a final now, as no silence will come to end it."""
        if self._stream_pending:
            self._start_stream()
        self._pending = np.zeros(0, dtype=np.int16)
        if self._stream is None:
            return []
        self._endpointer.reset()
        return [self._finish(self._samples_seen)]

    def close(self) -> None:
        if self._stream is not None:
            self._stream.finish()
            self._stream = None
