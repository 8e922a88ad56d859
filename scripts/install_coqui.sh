#!/usr/bin/env bash
# Install coqui-tts (the maintained fork of Coqui TTS) into the project venv without touching torch.
#
# Why the dance: `import TTS` refuses to load unless torchaudio and (torch >= 2.9) torchcodec are
# importable, but PyPI's torchaudio/torchcodec wheels are CUDA builds whose native libraries fail
# to load beside CPU torch. We install both with --no-deps (so they cannot pull another torch) and,
# on a CPU-only torch, delete torchaudio's native libraries so it runs as pure Python: resample
# and MelSpectrogram work, torchaudio.load does not (our code uses soundfile instead).
# On a CUDA image, install a matching torch/torchaudio/torchcodec set instead of this script.
#
# Idempotent: re-running only re-checks that `import TTS` works.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=.venv/bin/python
PIP=".venv/bin/pip"

if "$PY" -c "import TTS" >/dev/null 2>&1; then
    echo "coqui-tts already importable: $("$PY" -c 'import importlib.metadata as m; print(m.version("coqui-tts"))')"
    exit 0
fi

torch_before=$("$PY" -c "import torch; print(torch.__version__)")

# coqui-tts 0.28 imports six without declaring it.
"$PIP" install -c constraints.txt "coqui-tts>=0.27,<0.29" six
"$PIP" install -c constraints.txt --no-deps torchaudio torchcodec

torch_after=$("$PY" -c "import torch; print(torch.__version__)")
if [ "$torch_before" != "$torch_after" ]; then
    echo "ERROR: torch changed from $torch_before to $torch_after; restore it with:" >&2
    echo "  $PIP install -c constraints.txt torch==${torch_before%%+*}" >&2
    exit 1
fi

# Only on CPU torch: the CUDA-built native parts of torchaudio cannot load there.
if "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)"; then
    ta_dir=$("$PY" -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('torchaudio').origin))")
    rm -f "$ta_dir"/lib/*.so
fi

"$PY" -c "import TTS; import importlib.metadata as m; print('coqui-tts', m.version('coqui-tts'), 'imports OK')"
