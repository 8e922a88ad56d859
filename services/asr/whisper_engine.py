"""Embedded-default English ASR: Whisper tiny.en (packaged) on CTranslate2, int8 on the CPU.

Whisper is not a streaming recogniser: a stream only collects the utterance that the VAD and
endpointer cut, and ``finish()`` transcribes it in one go (no partial transcripts). Decoding is
a beam search (5 wide by default), English, without timestamps, from CTranslate2's
``Whisper.encode`` and ``generate`` (faster-whisper's ``transcribe()`` adds VAD, prompts and
fallbacks we do not want).

Whisper's encoder expects a 30 s window (3000 mel frames) and pads every input to it; for a
2-3 s question most of the encoder's work is padding. The short-mel path encodes only the
utterance plus a margin of padding frames. Measured with ``python -m bench.bench_wer`` (40
questions by 4 espeak-ng voices and the Piper voice: 200 utterances, or 600 with --all-speeds;
1 thread, 2 shared cores; latency = median time of ``finish()``):

    mel                          WER (200)  WER (600)  exact (200)  latency (200)
    padded to 3000 frames          13.1 %     13.6 %     73.0 %       350 ms
    utterance + 200 frames          9.6 %     11.0 %     72.5 %        60 ms
    utterance + 100 frames         10.0 %
    utterance + 500 frames         10.6 %
    utterance + 0 frames           13.2 %

(Those rows are greedy, beam 1.) Beam search on the short mel, the same sets, 2026-12-05 on a
2-core Xeon (``python -m bench.bench_wer --engines whisper-short --beams 1,2,3,5``, and with
``--all-speeds`` for 600; docs/bench/wer-beams-*-2026-12-05.json):

    beam    WER (200)  WER (600)  exact (600)  latency (200 / 600)
    1         10.0 %     11.0 %     71.8 %      35 / 34 ms
    2          9.0 %     10.0 %     73.8 %      38 / 37 ms
    3          8.3 %      9.6 %     74.5 %      40 / 40 ms
    5          8.4 %      9.4 %     75.2 %      44 / 41 ms

Beam 5 (``AVATAR_WHISPER_BEAM``, Whisper's own default) is ours: a sixth fewer word errors for
6-9 ms a question, since the encoder, not the decoder's beams, is most of the work.

Those figures feed the set's fixed cut (300 ms of lead). Through the service's own cut (the
voice detector and endpointer, ``bench_wer``'s default since 2026-12-05) the same set gives
beam 1 / beam 5: 15.0 / 11.7 % with a 300 ms pre-roll, 11.9 / 9.4 % with the 500 ms pre-roll
now in AsrSettings (docs/bench/wer-vad-cut-*-2026-12-05.json).

The short mel gets as many utterances word for word as the padded one and hallucinates less
on the ones it misses (padded: "How many lengths do not apply to half?"), six times faster.
It needs the margin (the frames of padding tell the decoder that speech has ended) and the
repetition cut of repeats.py: without the cut, 200 frames gave 25 % WER and no margin 97 %, the
decoder saying the question again and again. The short path is the default;
``AVATAR_WHISPER_MEL=padded`` selects Whisper's full window.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np

from services.asr.repeats import drop_repeats
from services.asr.settings import AsrSettings
from services.asr.whisper_model import packaged_model_dir, read_verified
from services.media import SAMPLE_RATE

logger = logging.getLogger(__name__)

MelPath = Literal["short", "padded"]

WINDOW_FRAMES = 3000  # Whisper's 30 s window at 100 mel frames per second (the encoder's limit)
# Padding frames after the utterance on the short path: without enough of them the decoder does
# not see that speech has ended and says the utterance again (see the table above).
SHORT_MEL_MARGIN_FRAMES = 200
# Audio longer than a window is transcribed in pieces; 28 s leaves room for the margin.
CHUNK_SAMPLES = 28 * SAMPLE_RATE
# Token budget per window: generous for fast speech (the WER set peaks at 6.2 tokens per second
# of utterance audio), small enough that a repetition loop ends early.
TOKENS_PER_S = 6
TOKEN_SLACK = 8
# CTranslate2 caps Whisper's new tokens at half of max_length (CTranslate2 issue #1856).
MAX_NEW_TOKENS = 224
# Beam search over greedy: see the table in the module docstring.
DEFAULT_BEAM_SIZE = 5
# faster-whisper's no-speech rule: the model thinks there is no speech and is unsure of its text.
NO_SPEECH_PROB = 0.6
LOW_AVG_LOGPROB = -1.0


class _WhisperStream:
    def __init__(self, engine: "WhisperEngine") -> None:
        self._engine = engine
        self._parts: list[np.ndarray] = []

    def accept(self, pcm: np.ndarray) -> str:
        self._parts.append(np.asarray(pcm, dtype=np.int16))
        return ""

    def finish(self) -> str:
        parts, self._parts = self._parts, []
        if not parts:
            return ""
        return self._engine.transcribe(np.concatenate(parts))

    def peek(self, silence_samples: int = 0) -> str:
        """The utterance so far (for a tentative end of turn), then ``silence_samples`` of
        zeros; the stream goes on."""
        if not self._parts:
            return ""
        return self._engine.transcribe(np.concatenate([*self._parts, np.zeros(silence_samples, np.int16)]))

    def close(self) -> None:
        self._parts = []


class WhisperEngine:
    name = "whisper"

    def __init__(
        self,
        model_dir: Path | None = None,
        threads: int = 1,
        mel: MelPath = "short",
        margin_frames: int = SHORT_MEL_MARGIN_FRAMES,
        beam_size: int = DEFAULT_BEAM_SIZE,
    ) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        folder = packaged_model_dir() if model_dir is None else model_dir
        files = read_verified(folder)
        started = time.perf_counter()
        # From the verified bytes, not the path, so what was checked is what runs. The folder
        # only names the model (faster-whisper looks there for an optional preprocessor config).
        self._model = WhisperModel(
            str(folder), device="cpu", compute_type="int8", cpu_threads=threads, files=dict(files)
        )
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe", language="en"
        )
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._mel: MelPath = mel
        self._margin_frames = margin_frames
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, not {beam_size}")
        self._beam_size = beam_size
        logger.info(
            "WhisperEngine(%s): loaded in %.0f ms (%d threads, %s mel, beam %d)",
            folder, (time.perf_counter() - started) * 1000, threads, mel, beam_size,
        )

    @classmethod
    def from_settings(cls, settings: AsrSettings) -> "WhisperEngine":
        return cls(threads=settings.whisper_threads, mel=settings.whisper_mel, beam_size=settings.whisper_beam)

    def new_stream(self) -> _WhisperStream:
        return _WhisperStream(self)

    def transcribe(self, pcm: np.ndarray) -> str:
        """16 kHz int16 utterance -> its text ('' for none). Blocking; thread-safe."""
        started = time.perf_counter()
        audio = pcm.astype(np.float32) / 32768.0
        pieces = [self._window(audio[i : i + CHUNK_SAMPLES]) for i in range(0, len(audio), CHUNK_SAMPLES)]
        text = " ".join(p for p in pieces if p)
        logger.debug(
            "WhisperEngine: %.1f s of audio -> %r in %.0f ms",
            len(pcm) / SAMPLE_RATE, text, (time.perf_counter() - started) * 1000,
        )
        return text

    def _features(self, audio: np.ndarray) -> np.ndarray:
        # Drop the frame of faster-whisper's own 160-sample tail padding, as its transcribe() does.
        mel = self._model.feature_extractor(audio)[:, :-1]
        if self._mel == "padded":
            frames = WINDOW_FRAMES
        else:
            frames = mel.shape[1] + self._margin_frames
            frames = min(WINDOW_FRAMES, frames + frames % 2)  # even: the encoder convolves by 2
        # Zeros, as faster-whisper pads the 30 s window: to the model this reads as "no more speech".
        return np.pad(mel[:, :frames], ((0, 0), (0, frames - min(frames, mel.shape[1]))))

    def _window(self, audio: np.ndarray) -> str:
        encoded = self._model.encode(self._features(audio))
        budget = min(MAX_NEW_TOKENS, math.ceil(TOKENS_PER_S * len(audio) / SAMPLE_RATE) + TOKEN_SLACK)
        result = self._model.model.generate(
            encoded,
            [self._prompt],
            beam_size=self._beam_size,
            max_length=2 * budget,  # CTranslate2 allows max_length // 2 new tokens
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],  # the model's own list of non-speech tokens
        )[0]
        tokens = result.sequences_ids[0]
        # scores[0] is the sum of log-probabilities over len(tokens) ** length_penalty (1.0);
        # faster-whisper averages over the end-of-text token too.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_AVG_LOGPROB:
            logger.debug(
                "WhisperEngine: no speech (p=%.2f, avg logprob %.2f)", result.no_speech_prob, avg_logprob
            )
            return ""
        text = drop_repeats(self._tokenizer.decode(tokens).strip(), len(tokens) >= budget)
        # Noise can come out as a lone "." or "...": that is no transcript.
        return text if any(c.isalnum() for c in text) else ""
