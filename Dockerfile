# syntax=docker/dockerfile:1
#
# The GPU image of the talking avatar. One image, five services: docker-compose.yml starts it as
# gateway, asr, llm, tts and lipsync (plus a one-shot `fetch`); `docker run` without a command
# starts all five in one container under main.py's supervisor.
#
# Version choices (checked against PyPI metadata and the PyTorch release notes, 2026-11):
# - torch==2.13.0 (requirements.txt, locked in locks/cuda.txt). Its PyPI wheel for Linux x86_64 is the CUDA 13.0 build: it
#   requires cuda-toolkit==13.0.3 and nvidia-cudnn-cu13==9.20.0.48 as pip wheels. PyTorch 2.13
#   ships CUDA 12.6 and 13.0 as stable, 13.2 as experimental.
# - The base image therefore carries CUDA 13.0 with cuDNN 9 (the user-space driver libraries come
#   from the host through the NVIDIA Container Toolkit; the host driver must support CUDA 13.0,
#   i.e. R580 or newer).
# - torchaudio==2.11.0: torchaudio's last release (the project stopped after 2.11). 2.11 moved
#   to torch's stable ABI and declares support for torch>=2.11, and its PyPI wheel is the CUDA
#   13.0 build, so it matches torch 2.13.0+cu130. (There is no cu132 torchaudio: this is one
#   more reason not to use torch's experimental CUDA 13.2 build.)
# - torchcodec==0.14.0: the torchcodec release built against torch 2.13 (0.13 is 2.12.1, 0.16
#   is 2.14, 0.17 is 2.15; torchcodec has no stable ABI, so the pairing must be exact). Its CPU
#   decoders use the system FFmpeg libraries, installed below with the `ffmpeg` package.
# - coqui-tts 0.28 refuses to import unless torchaudio and torchcodec are importable, and it
#   imports `six` without declaring it.
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu22.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ARG DEBIAN_FRONTEND=noninteractive

# System packages:
#   python3.11 + venv  the interpreter the project targets (Ubuntu 22.04's own build, no PPA)
#   espeak-ng          phonemes for Coqui VITS voices
#   ffmpeg             FFmpeg libraries for torchcodec (PyAV brings its own)
#   libsndfile1        soundfile
#   openssl            the entrypoint makes a self-signed certificate on first start
#   curl               the gateway's health check (HTTPS /healthz)
# DL3008 (pin apt versions) is ignored on purpose: Ubuntu removes superseded package versions
# from its archive after security updates, so exact apt pins break rebuilds within weeks. The
# base image tag pins the release; the Python stack, where versions matter, is pinned exactly.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        curl \
        espeak-ng \
        ffmpeg \
        libsndfile1 \
        openssl \
        python3.11 \
        python3.11-venv \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python3.11 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir pip==26.3

WORKDIR /app

# Dependencies first, so that a code change does not reinstall a multi-GB torch. locks/cuda.txt is
# generated from requirements-gpu.txt (scripts/lock.sh): every package, direct and transitive, at
# an exact version with its sha256, so pip resolves nothing and refuses a substituted wheel.
COPY locks/cuda.txt locks/nodeps.txt ./locks/
RUN pip install --no-cache-dir --no-deps --require-hashes -r locks/cuda.txt -r locks/nodeps.txt \
    && python -c "import torch, torchaudio, torchcodec, TTS, diffusers; \
assert torch.__version__.startswith('2.13.0'), torch.__version__; \
assert torch.version.cuda is not None, 'torch is a CPU build'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchaudio', torchaudio.__version__)"

# A fixed, unprivileged user. The mount points exist and belong to it before they are declared
# volumes, so fresh named volumes start out writable by it.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin avatar \
    && mkdir -p /models /cache /certs /data \
    && chown avatar:avatar /models /cache /certs

COPY --chown=avatar:avatar main.py ./
COPY --chown=avatar:avatar avatar_base/ avatar_base/
COPY --chown=avatar:avatar services/ services/
COPY --chown=avatar:avatar wav2lip/ wav2lip/
COPY --chown=avatar:avatar musetalk/ musetalk/
COPY --chown=avatar:avatar client/ client/
COPY --chown=avatar:avatar bench/ bench/
COPY --chown=avatar:avatar --chmod=755 scripts/docker-entrypoint.sh scripts/docker-entrypoint.sh

# Production settings baked in; docker-compose.yml and .env refine them.
ENV AVATAR_PROFILE=gpu \
    AVATAR_MODELS_DIR=/models \
    AVATAR_CACHE_DIR=/cache \
    AVATAR_HOST=0.0.0.0 \
    AVATAR_PORT=8443 \
    AVATAR_TLS_CERT=/certs/cert.pem \
    AVATAR_TLS_KEY=/certs/key.pem \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# /models: filled once by `python main.py fetch`; /certs: the generated (or your) certificate;
# /cache: prepared avatars and converted models, so restarts are fast.
VOLUME ["/models", "/cache", "/certs"]

# Numeric, so that runtimes that check runAsNonRoot need not resolve the name.
USER 10001:10001

EXPOSE 8443

# Health checks live in docker-compose.yml: each of the five services needs its own probe.
ENTRYPOINT ["/app/scripts/docker-entrypoint.sh"]
CMD ["python", "main.py", "--profile", "gpu", "--host", "0.0.0.0", "--port", "8443", "--models-dir", "/models"]
