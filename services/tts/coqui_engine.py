"""Coqui TTS engines (the maintained `coqui-tts` fork): VITS and XTTS-v2, the production voices.

- ``CoquiVitsEngine`` runs a VITS model (``tts_models/en/ljspeech/vits``, ``.../vctk/vits``) from
  a local folder holding ``config.json`` and the model file. VITS synthesizes a whole input at
  once, so we cut the text into sentences, and long sentences into clauses, and yield each piece's
  audio as soon as it is ready: the first audio arrives after one clause, not the whole answer.
- ``CoquiXttsEngine`` runs XTTS-v2 with ``inference_stream``: audio arrives every
  ``stream_chunk_size`` GPT tokens (about 0.2-0.3 s of speech), true streaming within a sentence.

Both yield 16 kHz mono int16 (``services.media.SAMPLE_RATE``), resampled by
``services/tts/resample.py``: each whole VITS clause (22,050 Hz) with ``to_16k``, as Piper's
sentences; XTTS's stream (24 kHz) with PyAV's stateful ``StreamResampler``, so chunk boundaries
inside one stream are seamless.

coqui-tts is installed from the locks (``locks/cpu-dev.txt``, ``locks/cuda.txt``). Checkpoints are
loaded by coqui-tts itself, which calls ``torch.load(weights_only=True)``. ``torchaudio.load``
does not work in our CPU install, so reference audio for voice cloning is read with soundfile.

Errors: ``TtsModelMissing`` (folder or file absent: names it and the fetch command) and
``TtsVoiceError`` (a speaker or language the model does not have: lists the ones it has).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from avatar_base.device import pick_device
from services.config_errors import ConfigurationError
from services.media import SAMPLE_RATE
from services.phoneme_timing import encode_timing, rescale_lengths
from services.tts.engine import TimedVoice, TtsModelMissing
from services.tts.resample import StreamResampler, resample_float, to_16k
from services.tts.settings import TtsSettings

logger = logging.getLogger(__name__)

# coqui-tts 0.28's XTTS GPT (TTS/tts/layers/xtts/gpt_inference.py) still calls GPT2Model with
# `past_key_values`, which transformers 5.24 deprecates. That call is theirs, not ours (our LLM
# passes `cache=`), so silence exactly that message rather than every FutureWarning.
XTTS_GPT2_DEPRECATION = r"`past_key_values` is deprecated .* for `GPT2Model.forward`"
warnings.filterwarnings("ignore", message=XTTS_GPT2_DEPRECATION, category=FutureWarning)


def _accept_generate_cache(gpt_inference: Any) -> None:
    """Let coqui-tts 0.28's XTTS GPT run under transformers 5.24's generate().

    5.24's generate() hands the KV cache to the model as ``cache=``; coqui's GPT2InferenceModel
    only reads ``past_key_values`` (it gets None and fails on the second token). Map the one to the
    other for this instance only, until coqui-tts follows the new name.
    """
    forward = gpt_inference.forward

    def forward_with_cache(*args: Any, cache: Any = None, **kwargs: Any) -> Any:
        if cache is not None and kwargs.get("past_key_values") is None:
            kwargs["past_key_values"] = cache
        return forward(*args, **kwargs)

    gpt_inference.forward = forward_with_cache

FETCH_HINT = "python main.py fetch --profile gpu"
# Clauses longer than this are cut at commas/semicolons: the first audio comes sooner, and VITS
# (no streaming of its own) never works on a paragraph at once.
MAX_CLAUSE_CHARS = 120
# Checkpoint names Coqui's releases use, in the order we try them.
VITS_MODEL_FILES = ("model_file.pth", "model.pth", "best_model.pth", "model_file.pth.tar")
# XTTS: GPT tokens per streamed chunk. Smaller = earlier first audio, more decoder calls.
XTTS_STREAM_CHUNK_TOKENS = 20
XTTS_REFERENCE_RATE = 22_050  # what XTTS's conditioning encoders expect

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


class TtsVoiceError(ConfigurationError, ValueError):
    """A speaker, reference clip or language that the model cannot use; lists what it can."""


def split_clauses(text: str, max_chars: int = MAX_CLAUSE_CHARS) -> list[str]:
    """Cut text into sentences, and sentences longer than ``max_chars`` into clauses.

    Pieces keep their punctuation (it shapes prosody). Clauses are merged back greedily so no
    piece is needlessly short: fewer, longer pieces sound more natural.
    """
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        sentence = sentence.strip()
        if not sentence:
            continue
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        current = ""
        for clause in _CLAUSE_END.split(sentence):
            if current and len(current) + 1 + len(clause) > max_chars:
                pieces.append(current)
                current = clause
            else:
                current = f"{current} {clause}" if current else clause
        if current:
            pieces.append(current)
    return pieces


def _require_folder(path: str, what: str, needs: tuple[str, ...]) -> None:
    if not path:
        raise TtsModelMissing(f"{what} needs a model folder: set AVATAR_TTS_VOICE or run `{FETCH_HINT}`")
    if not os.path.isdir(path):
        raise TtsModelMissing(f"{what} model folder {path} does not exist; get it with `{FETCH_HINT}`")
    for name in needs:
        if not os.path.isfile(os.path.join(path, name)):
            raise TtsModelMissing(
                f"{what} model folder {path} lacks {name}; re-fetch it with `{FETCH_HINT}`"
            )


def _find_vits_checkpoint(folder: str) -> str:
    for name in VITS_MODEL_FILES:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    raise TtsModelMissing(
        f"Coqui VITS model folder {folder} has none of {', '.join(VITS_MODEL_FILES)}; "
        f"re-fetch it with `{FETCH_HINT}`"
    )


# Files a released config.json points at with the trainer's absolute paths; after a download they
# sit next to config.json under one of these names.
_CONFIG_FILE_FIELDS = {
    "speakers_file": ("speaker_ids.json", "speaker_ids.pth", "speakers.json", "speakers.pth"),
    "d_vector_file": ("speakers.json", "speakers.pth"),
    "language_ids_file": ("language_ids.json",),
}


def localize_config_paths(config: Any, folder: str) -> None:
    """Point file fields of a Coqui config (top level and model_args) into ``folder``.

    Released configs carry paths from the machine the model was trained on. A field whose file
    does not exist is redirected to a same-named (or conventionally named) file in ``folder``.
    """
    holders = [config]
    if getattr(config, "model_args", None) is not None:
        holders.append(config.model_args)
    for holder in holders:
        for field_name, defaults in _CONFIG_FILE_FIELDS.items():
            value = getattr(holder, field_name, None)
            if not value:
                continue
            current = value[0] if isinstance(value, list) else value
            if os.path.isfile(current):
                continue
            names = (os.path.basename(str(current)), *defaults)
            local = next(
                (os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))),
                None,
            )
            if local is None:
                raise TtsModelMissing(
                    f"{folder}/config.json names {field_name}={current!r}, which is not in the "
                    f"folder; re-fetch the model with `{FETCH_HINT}`"
                )
            setattr(holder, field_name, [local] if isinstance(value, list) else local)


@dataclass(frozen=True, slots=True)
class VitsVoice:
    """Which speaker/language of a (possibly multi-speaker) VITS model we synthesize with."""

    speaker: str | None
    language: str | None


class CoquiVitsEngine:
    """VITS: one synthesis per sentence or clause, yielded as soon as each is done."""

    name = "coqui-vits"

    def __init__(self, model_dir: str, speaker: str = "", language: str = "", device: str = "auto") -> None:
        _require_folder(model_dir, "Coqui VITS", ("config.json",))
        checkpoint = _find_vits_checkpoint(model_dir)
        # Imported here: coqui-tts is only installed where a Coqui engine is configured.
        from TTS.config import load_config
        from TTS.tts.models import setup_model

        config = load_config(os.path.join(model_dir, "config.json"))
        localize_config_paths(config, model_dir)
        self._device = pick_device(device).type
        model = setup_model(config=config)
        model.load_checkpoint(config, checkpoint_path=checkpoint, eval=True)
        self._model = model.to(self._device)
        self._output_rate = int(config.audio.get("output_sample_rate") or config.audio["sample_rate"])
        self._voice = self._choose_voice(speaker, language)
        logger.info(
            "CoquiVitsEngine(%s): loaded on %s, %d Hz, speaker=%s",
            model_dir, self._device, self._output_rate, self._voice.speaker,
        )

    @classmethod
    def from_settings(cls, settings: TtsSettings) -> "CoquiVitsEngine":
        return cls(settings.voice, settings.speaker, settings.language, settings.device)

    @property
    def output_rate(self) -> int:
        """The model's native sample rate (before our resampling to 16 kHz)."""
        return self._output_rate

    def synthesize(self, text: str) -> Iterator[np.ndarray | TimedVoice]:
        import torch

        for piece in split_clauses(text):
            with torch.inference_mode():
                result = self._model.synthesize(
                    piece, speaker=self._voice.speaker, language=self._voice.language
                )
            wav = np.asarray(result["wav"], dtype=np.float32).reshape(-1)
            pcm = to_16k(wav, self._output_rate)
            if not pcm.size:
                continue
            timing = self._timing(result, len(wav))
            yield TimedVoice(pcm, timing) if timing else pcm

    def _timing(self, result: dict[str, Any], n_samples: int) -> str:
        """VITS's own durations (latent frames per input token, from ``inference()``) as the
        phoneme timing the lip-sync stage makes visemes from; "" if the model gave none.

        The tokens are the model's: IPA phonemes for a phoneme model (the released ones), letters
        for a character model. A blank token (``add_blank``) sounds with the token before it, as
        Piper counts its pads.
        """
        durations = (result.get("outputs") or {}).get("durations")
        ids = result.get("text_inputs")
        if durations is None or ids is None:
            return ""
        frames = [int(round(float(d))) for d in durations.reshape(-1).tolist()]
        tokens = [int(i) for i in ids.reshape(-1).tolist()]
        total = sum(frames)
        if len(frames) != len(tokens) or total <= 0 or n_samples % total:
            return ""
        hop = n_samples // total  # the decoder's upsampling: samples per latent frame
        characters = self._model.tokenizer.characters
        blank = getattr(characters, "blank", None)
        silent = {blank, getattr(characters, "pad", None)} - {None}
        pairs: list[list] = []
        leading = 0  # a blank before the first token sounds with it
        for token, n in zip(tokens, frames, strict=True):
            char = characters.id_to_char(token)
            if char in silent:
                if pairs:
                    pairs[-1][1] += n
                else:
                    leading += n
            else:
                pairs.append([char if char.strip() else " ", n + leading])
                leading = 0
        if not pairs:
            return ""
        pairs[-1][1] += leading
        lengths = rescale_lengths([n * hop for _, n in pairs], self._output_rate, SAMPLE_RATE)
        try:
            return encode_timing(zip([p for p, _ in pairs], lengths))
        except ValueError:
            return ""

    def _choose_voice(self, speaker: str, language: str) -> VitsVoice:
        manager = self._model.speaker_manager
        names = list(manager.name_to_id) if manager is not None else []
        chosen_speaker: str | None = None
        if len(names) > 1:
            if speaker and speaker not in names:
                raise TtsVoiceError(
                    f"speaker {speaker!r} is not in this model; choose one of {', '.join(names[:20])}"
                    + (" ..." if len(names) > 20 else "")
                )
            chosen_speaker = speaker or names[0]
        languages = list(self._model.language_manager.language_names) if self._model.language_manager else []
        chosen_language: str | None = None
        if len(languages) > 1:
            if language not in languages:
                raise TtsVoiceError(
                    f"language {language!r} is not in this model; choose one of {', '.join(languages)}"
                )
            chosen_language = language
        return VitsVoice(chosen_speaker, chosen_language)


class CoquiXttsEngine:
    """XTTS-v2 streaming: audio every ``stream_chunk_tokens`` GPT tokens."""

    name = "coqui-xtts"

    def __init__(
        self,
        model_dir: str,
        speaker: str = "",
        language: str = "en",
        device: str = "auto",
        stream_chunk_tokens: int = XTTS_STREAM_CHUNK_TOKENS,
    ) -> None:
        _require_folder(model_dir, "Coqui XTTS-v2", ("config.json", "model.pth", "vocab.json"))
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        config = XttsConfig()
        config.load_json(os.path.join(model_dir, "config.json"))
        if language not in config.languages:
            raise TtsVoiceError(
                f"XTTS-v2 has no language {language!r}; choose one of {', '.join(config.languages)}"
            )
        self._device = pick_device(device).type
        model = Xtts(config)
        model.load_checkpoint(config, checkpoint_dir=model_dir, eval=True)
        _accept_generate_cache(model.gpt.gpt_inference)
        self._model = model.to(self._device)
        self._language = language
        self._output_rate = int(config.model_args.output_sample_rate)
        self._stream_chunk_tokens = stream_chunk_tokens
        self._gpt_latent, self._speaker_embedding = self._conditioning(speaker, model_dir)
        logger.info(
            "CoquiXttsEngine(%s): loaded on %s, %d Hz, language=%s",
            model_dir, self._device, self._output_rate, language,
        )

    @classmethod
    def from_settings(cls, settings: TtsSettings) -> "CoquiXttsEngine":
        return cls(settings.voice, settings.speaker, settings.language, settings.device)

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        resampler = StreamResampler(self._output_rate)
        for piece in split_clauses(text):
            # inference_stream is decorated with torch.inference_mode, which torch applies to each
            # step of the generator, so grad mode never leaks into our caller between chunks.
            chunks = self._model.inference_stream(
                piece,
                self._language,
                self._gpt_latent,
                self._speaker_embedding,
                stream_chunk_size=self._stream_chunk_tokens,
                enable_text_splitting=False,
            )
            for chunk in chunks:
                pcm = resampler.push(chunk.detach().float().cpu().numpy())
                if pcm.size:
                    yield pcm
        tail = resampler.flush()
        if tail.size:
            yield tail

    def _conditioning(self, speaker: str, model_dir: str) -> tuple[Any, Any]:
        """GPT conditioning latent and speaker embedding: from a reference clip or a named voice."""
        if speaker and os.path.isfile(speaker):
            return self._clone_from_clip(speaker)
        manager = self._model.speaker_manager
        voices = manager.speakers if manager is not None else {}
        if not voices:
            raise TtsVoiceError(
                f"{model_dir} has no speakers_xtts.pth: set AVATAR_TTS_SPEAKER to a reference "
                "WAV of the voice to clone (6-30 s of clean speech)"
            )
        name = speaker or next(iter(voices))
        if name not in voices:
            raise TtsVoiceError(
                f"XTTS voice {name!r} is neither a file nor a built-in speaker; built-in: "
                + ", ".join(list(voices)[:20])
            )
        voice = voices[name]
        return voice["gpt_cond_latent"], voice["speaker_embedding"]

    def _clone_from_clip(self, path: str) -> tuple[Any, Any]:
        import soundfile as sf
        import torch

        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        reference = resample_float(mono, rate, XTTS_REFERENCE_RATE).astype(np.float32)
        tensor = torch.from_numpy(reference)[None, :].to(self._device)
        with torch.inference_mode():
            latent = self._model.get_gpt_cond_latents(tensor, XTTS_REFERENCE_RATE)
            embedding = self._model.get_speaker_embedding(tensor, XTTS_REFERENCE_RATE)
        logger.info("CoquiXttsEngine: cloned the voice of %s (%.1f s)", path, len(mono) / rate)
        return latent, embedding
