"""Whisper-tiny audio features for MuseTalk, one row per 20 ms, sliced per 40 ms video frame.

What MuseTalk feeds its UNet per video frame ``i`` (at 25 fps): the encoder's 5 hidden states
(embedding output + 4 layers, the last after the final layer norm) stacked per 20 ms whisper
frame, left-padded with 4 zero rows, and the 10 rows from ``floor(i * 50 / 25)``: the audio from
``t_i - 80 ms`` to ``t_i + 120 ms``, flattened frame-major to (10 * 5, 384) = (50, 384).

The 30 s padding problem, and how we avoid it
---------------------------------------------
Upstream pads every audio segment to 30 s (3000 mel frames) because transformers'
``WhisperEncoder.forward`` refuses any other length (it raises unless the mel input is exactly
``max_source_positions * 2`` = 3000 frames) and adds all 1500 positional embeddings. A 2 s clause
then costs 15x the encoder work it needs. We avoid it in two ways:

1. The encoder runs once per clause, never per batch: the lip-sync engine receives whole clauses,
   so ``ClauseFeatures`` encodes the clause and every batch only slices rows (cheap indexing).
2. By default (``window="clause"``) we pad the clause only to what its frames need (the clause,
   the 120 ms look-ahead and some right context, rounded up to 1 s so few shapes occur) and run
   the encoder's own submodules ourselves (``encode_mel``): conv1, conv2, the first ``P`` rows of
   ``embed_positions``, the layers and the final layer norm. Convolutions are local and the log-mel
   front end is exact (its global ``max - 8`` floor only depends on the loudest frame, which the
   zero padding never changes), so the only difference to the 30 s computation is that attention
   no longer sees the ~29 s of padding tokens. ``window="full"`` keeps the 30 s padding and
   reproduces upstream bit for bit (tested against the stock ``WhisperEncoder``), for one 30 s
   encoder pass per clause (a few ms on a GPU).

Clauses longer than 30 s are cut into 30 s segments, each encoded on its own, as upstream does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from avatar_base.media import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS

WHISPER_FPS = 50  # encoder rows per second: mel hop 10 ms, then conv2 stride 2
MEL_HOP_SAMPLES = 160
SAMPLES_PER_WHISPER_FRAME = SAMPLE_RATE // WHISPER_FPS  # 320 = 20 ms
SEGMENT_SAMPLES = 30 * SAMPLE_RATE  # whisper's fixed 30 s window
PAD_LEFT_ROWS = 4  # 80 ms of zero features before the clause
ROWS_PER_FRAME = 10  # 2 * (2 + 2 + 1): [t - 80 ms, t + 120 ms]
PAD_RIGHT_ROWS = 12  # upstream pads 2 * 3 * 2 zero rows after the clause
LOOKAHEAD_MS = 120
# Clause mode: right context beyond the last needed row, then round positions up to 1 s.
CONTEXT_ROWS = 25
BUCKET_ROWS = WHISPER_FPS
WINDOWS = ("clause", "full")


def frames_for_samples(n_samples: int) -> int:
    """Video frames a clause of ``n_samples`` produces: one per started 640-sample unit."""
    return math.ceil(n_samples / SAMPLES_PER_VIDEO_FRAME)


@torch.inference_mode()
def encode_mel(encoder: torch.nn.Module, mel: torch.Tensor) -> torch.Tensor:
    """(B, n_mel, 2P) log-mel -> (B, P, L+1, D) hidden states, for any P <= max positions.

    The same arithmetic as ``WhisperEncoder.forward`` with ``output_hidden_states=True`` (embedding
    output, each layer's output, the last one replaced by the final layer norm), but using the
    first P positional embeddings instead of demanding exactly 1500.
    """
    positions = mel.shape[-1] // 2
    table = encoder.embed_positions.weight
    if mel.shape[-1] % 2 or positions > table.shape[0]:
        raise ValueError(f"mel length {mel.shape[-1]} must be even and <= {2 * table.shape[0]}")
    x = torch.nn.functional.gelu(encoder.conv1(mel))
    x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + table[:positions]
    states = [x]
    for layer in encoder.layers:
        x = layer(x, None)
        states.append(x)
    states[-1] = encoder.layer_norm(x)
    return torch.stack(states, dim=2)


@dataclass(frozen=True, slots=True)
class WhisperFeaturizer:
    """Log-mel front end + whisper encoder -> one (L+1, D) row per 20 ms of audio."""

    encoder: torch.nn.Module
    extractor: object  # transformers WhisperFeatureExtractor
    window: str = "clause"

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, not {self.window!r}")

    @property
    def hidden_dim(self) -> int:
        return int(self.encoder.embed_positions.weight.shape[1])

    @property
    def states(self) -> int:
        return len(self.encoder.layers) + 1

    def _padded_samples(self, needed_rows: int) -> int:
        if self.window == "full":
            return SEGMENT_SAMPLES
        rows = min(
            SEGMENT_SAMPLES // SAMPLES_PER_WHISPER_FRAME,
            math.ceil((needed_rows + CONTEXT_ROWS) / BUCKET_ROWS) * BUCKET_ROWS,
        )
        return rows * SAMPLES_PER_WHISPER_FRAME

    def mel(self, audio: np.ndarray, padded_samples: int) -> np.ndarray:
        """(n_mel, padded_samples / 160) normalised log-mel of float audio zero-padded."""
        out = self.extractor(
            audio,
            sampling_rate=SAMPLE_RATE,
            return_tensors="np",
            padding="max_length",
            max_length=padded_samples,
            truncation=True,
        )
        return np.asarray(out["input_features"][0], dtype=np.float32)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """float32 audio in [-1, 1] -> (floor(len / 320), L+1, D) float32 feature rows."""
        param = next(self.encoder.parameters())
        parts = [np.zeros((0, self.states, self.hidden_dim), dtype=np.float32)]
        for start in range(0, len(audio), SEGMENT_SAMPLES):
            segment = audio[start : start + SEGMENT_SAMPLES]
            needed = len(segment) // SAMPLES_PER_WHISPER_FRAME
            mel = torch.from_numpy(self.mel(segment, self._padded_samples(needed)))
            states = encode_mel(self.encoder, mel[None].to(param.device, param.dtype))
            parts.append(states[0, :needed].float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)


def frame_windows(rows: np.ndarray, n_frames: int, fps: int = VIDEO_FPS) -> np.ndarray:
    """(T, L+1, D) rows -> (n_frames, 10 * (L+1), D) windows [t - 80 ms, t + 120 ms].

    Rows past the clause's end are zeros, as upstream pads zero *features* (not zero audio).
    """
    states, dim = rows.shape[1:]
    padded = np.zeros((PAD_LEFT_ROWS + len(rows) + PAD_RIGHT_ROWS, states, dim), dtype=np.float32)
    padded[PAD_LEFT_ROWS : PAD_LEFT_ROWS + len(rows)] = rows
    starts = (np.arange(n_frames) * WHISPER_FPS) // fps
    need = int(starts[-1]) + ROWS_PER_FRAME if n_frames else 0
    if need > len(padded):
        padded = np.concatenate(
            [padded, np.zeros((need - len(padded), states, dim), dtype=np.float32)]
        )
    idx = starts[:, None] + np.arange(ROWS_PER_FRAME)[None, :]
    return padded[idx].reshape(n_frames, ROWS_PER_FRAME * states, dim)


class ClauseFeatures:
    """A clause's features, encoded once; ``windows(start, stop)`` slices one batch of frames.

    The audio is zero-padded to whole 640-sample units, so the clause has exactly
    ``2 * n_frames`` rows; the engine asks batch by batch and whisper never runs again.
    """

    def __init__(self, featurizer: WhisperFeaturizer, audio: np.ndarray) -> None:
        self.n_frames = frames_for_samples(len(audio))
        padded = np.zeros(self.n_frames * SAMPLES_PER_VIDEO_FRAME, dtype=np.float32)
        padded[: len(audio)] = audio
        self._rows = featurizer.encode(padded)
        self._windows = frame_windows(self._rows, self.n_frames)

    @property
    def rows(self) -> np.ndarray:
        return self._rows

    def windows(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, 10 * (L+1), D) for frames start..stop-1."""
        return self._windows[start:stop]


def speaking_frames(audio: np.ndarray, n_frames: int, silence_dbfs: float) -> np.ndarray:
    """Bool per frame: is the audio under its feature window ([t - 80, t + 120 ms]) audible?

    Silent frames skip the UNet and show the avatar's own frame.
    """
    half_before = PAD_LEFT_ROWS * SAMPLES_PER_WHISPER_FRAME
    span = ROWS_PER_FRAME * SAMPLES_PER_WHISPER_FRAME
    threshold = 10.0 ** (silence_dbfs / 20.0)
    flags = np.zeros(n_frames, dtype=bool)
    for i in range(n_frames):
        start = i * SAMPLES_PER_VIDEO_FRAME - half_before
        chunk = audio[max(0, start) : max(0, start + span)]
        if chunk.size:
            flags[i] = float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64)))) >= threshold
    return flags
