"""XTTS-v2 through our engine with a tiny random-weight model of the real architecture.

The real XTTS (Coqui licence, ~1.8 GB) cannot be fetched here, so the test builds one with the
same classes at toy size: a BPE vocabulary made with `tokenizers`, coqui's `Xtts` with a
2-layer GPT, written as config.json + model.pth + vocab.json like the released folder. The
engine then loads it exactly as it loads the real one and streams with ``inference_stream``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from services.tts.coqui_engine import CoquiXttsEngine
from tests.speech import piper_speech

pytestmark = pytest.mark.slow


def _tiny_xtts(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, trainers
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    folder.mkdir(parents=True)
    # The special tokens XTTS's tokenizer and GPT look up by name.
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    trainer = trainers.BpeTrainer(
        vocab_size=120, special_tokens=["[STOP]", "[UNK]", "[SPACE]", "[START]", "[en]"],
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz.,?!'-"),
    )
    tok.train_from_iterator(["hello there how are you today", "once upon a time"], trainer)
    tok.save(str(folder / "vocab.json"))
    config = XttsConfig()
    args = config.model_args
    # Toy GPT; the decoder's input must match the GPT's width. No perceiver: fewer weights.
    args.gpt_layers, args.gpt_n_model_channels, args.gpt_n_heads = 2, 64, 4
    args.decoder_input_dim = 64
    args.gpt_max_audio_tokens = 64  # random weights rarely emit stop: bound the answer
    args.gpt_use_perceiver_resampler = False
    torch.manual_seed(0)
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(folder / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder


def test_coqui_xtts_random_model_streams_16k_int16_chunks(tmp_path: Path) -> None:
    folder = _tiny_xtts(tmp_path / "xtts_v2")
    reference = tmp_path / "voice.wav"
    sf.write(reference, piper_speech("Hello there, this is a reference voice for cloning."), 16000)
    engine = CoquiXttsEngine(str(folder), speaker=str(reference), language="en", device="cpu")

    started = time.perf_counter()
    arrivals, chunks = [], []
    for chunk in engine.synthesize("Hello there. How are you today?"):
        arrivals.append(time.perf_counter() - started)
        chunks.append(chunk)
    total = time.perf_counter() - started
    # True streaming: several chunks, the first long before synthesis is over.
    assert len(chunks) >= 3, len(chunks)
    assert arrivals[0] < 0.5 * total, (arrivals[0], total)
    assert all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    # 16 kHz output (resampled from XTTS's 24 kHz): 64 audio tokens of 1024 samples at
    # 24 kHz per sentence at most, so at most ~2 x 2.7 s of 16 kHz audio here.
    samples = sum(len(c) for c in chunks)
    assert 0 < samples <= 2 * 64 * 1024 * 16000 // 24000 + 16000
