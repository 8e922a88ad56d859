"""Start llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``), with the
weight-repacking buffers off: on this kind of machine (AVX-512 + AMX reported, built by
scripts/build_llama_server.sh, llama-cpp-python 0.3.36) the first decode with them segfaults,
and without them the same model answers. Arguments are llama_cpp.server's own.

    <llama venv>/bin/python scripts/llama_server.py --model FILE.gguf --port 8081
"""

from __future__ import annotations

import runpy

import llama_cpp.llama_cpp as native

_default_params = native.llama_model_default_params


def _params():  # noqa: ANN202 (a ctypes struct)
    params = _default_params()
    params.use_extra_bufts = False
    return params


native.llama_model_default_params = _params
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
