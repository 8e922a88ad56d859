"""Voice-activity endpointing: speech probabilities per 32 ms window -> onset / end events.

Onset needs ``onset_ms`` of voiced windows within a short look-back span rather than that
much *uninterrupted* voicing, because short words ("Stop.") have gaps inside them. The end of
an utterance is ``silence_ms`` of consecutive unvoiced windows. A lower "stay voiced"
threshold (hysteresis) keeps soft word endings inside the utterance.

While the avatar is audible the onset is *guarded*: a window counts as voiced only with a
higher probability and a level above a floor (and the onset may be set to need more of them;
measured on echoed speech, the level floor is what rejects echo, so by default it does not). The browser's echo
canceller removes most of the avatar's voice from the microphone; what leaks through is quiet
and often still looks like speech to the VAD, so the guard keeps it from interrupting the
avatar, while a person talking over it still gets through in a couple of hundred ms.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

VAD_WINDOW_SAMPLES = 512  # silero-vad's window at 16 kHz
VAD_WINDOW_MS = 32


class VadEvent(Enum):
    ONSET = "onset"
    END = "end"


@dataclass(frozen=True, slots=True)
class EndpointerConfig:
    threshold: float = 0.5
    onset_ms: int = 96
    silence_ms: int = 300
    lookback_ms: int = 256
    hysteresis: float = 0.15
    # The guarded onset, while the avatar is audible (see the module docstring).
    guard_threshold: float = 0.7
    guard_onset_ms: int = 96


class Endpointer:
    def __init__(self, config: EndpointerConfig) -> None:
        self._cfg = config
        self._recent: deque[bool] = deque(maxlen=max(1, config.lookback_ms // VAD_WINDOW_MS))
        self._onset_windows = max(1, -(-config.onset_ms // VAD_WINDOW_MS))
        self._guard_onset_windows = max(1, -(-config.guard_onset_ms // VAD_WINDOW_MS))
        self._end_windows = max(1, -(-config.silence_ms // VAD_WINDOW_MS))
        self.in_speech = False
        self._silent_run = 0

    def update(self, prob: float, guarded: bool = False, loud: bool = True) -> VadEvent | None:
        """Feed one window's speech probability.

        ``guarded``: the avatar is audible, so use the guarded onset; ``loud``: the window's
        level is above the guard's floor (only consulted when guarded).
        """
        if not self.in_speech:
            if guarded:
                self._recent.append(prob >= self._cfg.guard_threshold and loud)
                needed = self._guard_onset_windows
            else:
                self._recent.append(prob >= self._cfg.threshold)
                needed = self._onset_windows
            if sum(self._recent) >= needed:
                self.in_speech = True
                self._silent_run = 0
                self._recent.clear()
                return VadEvent.ONSET
            return None
        if prob >= self._cfg.threshold - self._cfg.hysteresis:
            self._silent_run = 0
            return None
        self._silent_run += 1
        if self._silent_run >= self._end_windows:
            self.in_speech = False
            self._silent_run = 0
            return VadEvent.END
        return None

    def stays_voiced(self, prob: float) -> bool:
        """Whether a window keeps an utterance going (the hysteresis threshold)."""
        return prob >= self._cfg.threshold - self._cfg.hysteresis

    def reset(self) -> None:
        self.in_speech = False
        self._silent_run = 0
        self._recent.clear()
