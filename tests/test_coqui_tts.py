"""Coqui TTS engines (services/tts/coqui_engine.py) with small random-weight models built here.

No Coqui model ships in a package, so the test builds a real VITS of the real architecture with
tiny hidden sizes, saves it as a Coqui model folder (config.json + model_file.pth), and loads it
through the engine like a fetched model. XTTS-v2 at toy size: tests/test_coqui_xtts_random.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("TTS", reason="coqui-tts is not installed (./test.sh installs it from locks/cpu-dev.txt)")

from services.media import SAMPLE_RATE  # noqa: E402
from services.tts.coqui_engine import (  # noqa: E402
    CoquiVitsEngine,
    CoquiXttsEngine,
    TtsVoiceError,
    split_clauses,
)
from services.tts.engine import TtsModelMissing, voice_pcm  # noqa: E402
from services.tts.engines import build_engine  # noqa: E402
from services.tts.resample import StreamResampler  # noqa: E402
from services.tts.settings import TtsSettings  # noqa: E402


def _save_tiny_vits(folder: Path, speakers: list[str] | None = None) -> None:
    import torch
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    folder.mkdir(parents=True)
    args = VitsArgs(
        hidden_channels=16, hidden_channels_ffn_text_encoder=32, num_layers_text_encoder=1,
        num_layers_posterior_encoder=1, num_layers_flow=1, upsample_initial_channel_decoder=16,
        resblock_kernel_sizes_decoder=[3], resblock_dilation_sizes_decoder=[[1, 3, 5]],
        use_sdp=False, init_discriminator=False,
    )
    trainer_path = "/home/trainer/vctk/speaker_ids.json"
    if speakers:
        (folder / "speaker_ids.json").write_text(json.dumps({s: i for i, s in enumerate(speakers)}))
        args.use_speaker_embedding = True
        args.num_speakers = len(speakers)
        args.speaker_embedding_channels = 8
        # Build with the real path; the saved config gets the trainer's path (see below).
        args.speakers_file = str(folder / "speaker_ids.json")
    config = VitsConfig(
        model_args=args, use_phonemes=False, text_cleaner="english_cleaners",
        audio=BaseAudioConfig(sample_rate=22_050),
    )
    torch.manual_seed(0)
    model = Vits(config)
    torch.save({"model": model.state_dict()}, folder / "model_file.pth")
    if speakers:
        # Like a released vctk model: config.json points at the trainer's absolute path.
        config.model_args.speakers_file = trainer_path
    config.save_json(str(folder / "config.json"))


@pytest.fixture(scope="module")
def vits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("coqui") / "tts_models--en--ljspeech--vits"
    _save_tiny_vits(folder)
    return folder


@pytest.fixture(scope="module")
def vits_engine(vits_dir: Path) -> CoquiVitsEngine:
    engine = build_engine(TtsSettings(engine="coqui-vits", voice=str(vits_dir), device="cpu"))
    assert isinstance(engine, CoquiVitsEngine)
    return engine


def test_coqui_vits_random_model_synthesizes_16k_int16(vits_engine: CoquiVitsEngine) -> None:
    chunks = list(vits_engine.synthesize("Hello there."))
    assert len(chunks) == 1
    pcm = voice_pcm(chunks[0])
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert pcm.size > SAMPLE_RATE // 20  # more than 50 ms of audio for a two-word sentence
    assert np.abs(pcm.astype(np.int32)).max() > 0
    assert vits_engine.output_rate == 22_050


def test_coqui_vits_yields_one_chunk_per_sentence(vits_engine: CoquiVitsEngine) -> None:
    text = "Hello there. How are you today? I am fine, thanks!"
    chunks = [voice_pcm(c) for c in vits_engine.synthesize(text)]
    assert len(chunks) == len(split_clauses(text)) == 3
    assert all(c.dtype == np.int16 and c.size > 0 for c in chunks)


def test_coqui_vits_multi_speaker_with_released_config_paths(tmp_path: Path) -> None:
    folder = tmp_path / "tts_models--en--vctk--vits"
    _save_tiny_vits(folder, speakers=["p225", "p226"])
    assert "/home/trainer/vctk/speaker_ids.json" in (folder / "config.json").read_text()
    engine = CoquiVitsEngine(str(folder), speaker="p226", device="cpu")
    assert voice_pcm(list(engine.synthesize("One two three."))[0]).size > 0
    with pytest.raises(TtsVoiceError, match="p225"):
        CoquiVitsEngine(str(folder), speaker="nobody", device="cpu")


def test_coqui_vits_missing_folder_names_it_and_fetch_command(tmp_path: Path) -> None:
    missing = tmp_path / "tts_models--en--ljspeech--vits"
    with pytest.raises(TtsModelMissing) as info:
        build_engine(TtsSettings(engine="coqui-vits", voice=str(missing)))
    assert str(missing) in str(info.value) and "python main.py fetch --profile gpu" in str(info.value)


def test_coqui_vits_folder_without_checkpoint_is_reported(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TtsModelMissing, match="model_file.pth"):
        CoquiVitsEngine(str(tmp_path))


# XTTS-v2: model-folder checks and the streaming resampler here; the engine streaming from a
# random-weight model of the real architecture is in tests/test_coqui_xtts_random.py.


def test_coqui_xtts_missing_files_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "tts_models--multilingual--multi-dataset--xtts_v2"
    with pytest.raises(TtsModelMissing, match="does not exist"):
        build_engine(TtsSettings(engine="coqui-xtts", voice=str(folder)))
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.pth").write_bytes(b"")
    with pytest.raises(TtsModelMissing) as info:
        CoquiXttsEngine(str(folder))
    assert "vocab.json" in str(info.value) and str(folder) in str(info.value)


def test_coqui_xtts_stream_resampler_is_seamless_across_chunks() -> None:
    # A 24 kHz tone cut into irregular chunks, as inference_stream delivers it, must come out
    # the same as resampling it in one go (no clicks or lost samples at chunk boundaries).
    rate = 24_000
    t = np.arange(rate) / rate
    wav = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    resampler = StreamResampler(rate)
    cuts = [0, 1234, 5000, 5001, 17_000, rate]
    pieces = [resampler.push(wav[a:b]) for a, b in zip(cuts, cuts[1:])]
    pieces.append(resampler.flush())
    streamed = np.concatenate(pieces)
    once = StreamResampler(rate)
    whole = np.concatenate([once.push(wav), once.flush()])
    assert streamed.dtype == np.int16
    assert abs(streamed.size - SAMPLE_RATE) <= 2
    n = min(streamed.size, whole.size)
    assert np.abs(streamed[:n].astype(np.int32) - whole[:n]).max() <= 2


def test_coqui_split_clauses_cuts_long_sentences_at_commas() -> None:
    assert split_clauses("Hi. Who are you? Fine!") == ["Hi.", "Who are you?", "Fine!"]
    long = ", ".join(["this clause is about twenty-eight chars"] * 6) + "."
    pieces = split_clauses(long, max_chars=90)
    assert len(pieces) > 1 and all(len(p) <= 90 for p in pieces)
    assert " ".join(pieces) == long
    assert split_clauses("   ") == []


def test_coqui_stack_is_locked_for_cpu_and_cuda() -> None:
    """coqui-tts and its torchaudio/torchcodec pair install from both locks, at the same versions."""
    root = Path(__file__).resolve().parents[1]
    for lock in ("locks/cpu-dev.txt", "locks/cuda.txt"):
        text = (root / lock).read_text()
        for pin in ("coqui-tts==0.28.0", "torchaudio==2.11.0", "torchcodec==0.14.0", "six=="):
            assert f"\n{pin}" in text, (lock, pin)
    setup = (root / "scripts" / "setup.sh").read_text()
    assert "torchaudio" in setup and "lib/*.so" in setup  # CPU torch: torchaudio runs as pure Python


def test_coqui_vits_gives_its_durations_as_phoneme_timing(vits_engine: CoquiVitsEngine) -> None:
    """VITS's own durations (inference()) travel as phoneme timing, tiling the chunk's audio, and
    the lip-sync stage makes visemes of them (the tiny model reads letters, not IPA)."""
    from services.lipsync.animation_engine import AnimationEngine
    from services.phoneme_timing import parse_timing
    from services.tts.engine import TimedVoice

    chunks = list(vits_engine.synthesize("Mama bought a blue umbrella."))
    assert chunks and all(isinstance(c, TimedVoice) for c in chunks)
    spans = parse_timing(chunks[0].phonemes, len(chunks[0].pcm))
    assert spans is not None
    letters = "".join(s.phoneme for s in spans)
    assert "mama" in letters.lower().replace(" ", "")[:8], letters
    # The spans tile the audio; resampling rounds the last one by a few samples at most.
    raw_total = sum(int(line.split(":", 1)[0]) for line in chunks[0].phonemes.split("\n"))
    assert abs(raw_total - len(chunks[0].pcm)) <= 4
    assert all(s.end > s.start for s in spans[1:-1])
    job = AnimationEngine.default().prepare(chunks[0].pcm, 0, phonemes=spans)
    assert job.mouth == "visemes"
