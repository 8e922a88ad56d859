# The talking avatar's image. One Dockerfile, two variants that differ only in their lock:
#
#   cpu   LOCK=locks/cpu-runtime.txt  torch 2.13.0+cpu, the embedded default (docker-compose.cpu.yml)
#   cuda  LOCK=locks/cuda.txt         torch 2.13.0 from PyPI, the CUDA 13.0 build (docker-compose.yml)
#
# scripts/docker-build.sh builds either (docs/docker.md). One image, five services: compose starts
# it as gateway, asr, llm, tts and lipsync; `docker run` without a command starts all five in one
# container under main.py's supervisor.
#
# Why a plain Debian base serves the GPU too: PyPI's CUDA torch wheels bring their own CUDA 13.0
# runtime and cuDNN 9 as pip packages (nvidia-*-cu13, locked with their hashes), and the driver's
# user-space libraries come from the host through the NVIDIA Container Toolkit (host driver R580
# or newer for CUDA 13.0). So no CUDA base image is needed, and both variants build where no
# registry is reachable: scripts/docker-base.sh makes BASE_IMAGE from Debian's packages. Debian
# bookworm's python3 is 3.11, the version the locks target.
#
# torchaudio==2.11.0 and torchcodec==0.14.0 (cuda lock only): coqui-tts 0.28 refuses to import
# without them; torchcodec's CPU decoders use the system FFmpeg libraries (the `ffmpeg` package).
#
# Few layers, heavy steps in one RUN each, ordered from the least to the most often changed:
# system packages, then the locked Python stack, then the code. A code change rebuilds only the
# last, small layers; a new lock reuses the system layer.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# System packages, the unprivileged user and the virtual environment, in one layer:
#   python3, python3-venv  Debian's Python 3.11
#   espeak-ng              phonemes for Coqui VITS voices
#   ffmpeg, libpython3.11  FFmpeg libraries for torchcodec (PyAV brings its own); torchcodec's
#                          build for Debian's FFmpeg 5 also links libpython3.11.so, which Debian's
#                          python3 package does not ship (found by scripts/docker-check-cuda.sh)
#   libsndfile1            soundfile
#   openssl                the entrypoint makes a self-signed certificate on first start
#   curl                   the gateway's health check (HTTPS /healthz)
# The pip, CA certificates and OS trust store (PIP_CERT above) are the system's, so a host's
# extra CA (scripts/docker-base.sh adds it) also works for pip. DL3008 (pin apt versions) is
# ignored on purpose: Debian drops superseded versions after security updates, so exact pins
# break rebuilds within weeks; the Python stack, where versions matter, is pinned with hashes.
# The mount points exist and belong to the user before they are declared volumes, so fresh
# named volumes start out writable by it.
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates curl espeak-ng ffmpeg libpython3.11 libsndfile1 openssl python3 python3-venv >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && python3 -m venv "$VIRTUAL_ENV" \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin avatar \
    && mkdir -p /models /cache /certs /data /app \
    && chown avatar:avatar /models /cache /certs

WORKDIR /app

# The lock: every package, direct and transitive, at an exact version with its sha256 (scripts/
# lock.sh), so pip resolves nothing and refuses a substituted file. Declared here, not above, so
# both variants share the system layer. PIP_FIND_LINKS / PIP_EXTRA_INDEX_URL say where torch
# +cpu comes from (it is not on PyPI): scripts/docker-build.sh serves this host's locked wheel,
# or names PyTorch's CPU index; the cuda lock needs neither.
ARG LOCK=locks/cpu-runtime.txt
ARG PIP_FIND_LINKS=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_TRUSTED_HOST=""
COPY locks/cpu-runtime.txt locks/cuda.txt locks/nodeps.txt ./locks/
RUN pip install --no-deps --require-hashes -r "$LOCK" -r locks/nodeps.txt \
    && python -c "import torch, aiortc, zmq, av; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
    && rm -rf /root/.cache

COPY --chown=avatar:avatar main.py ./
COPY --chown=avatar:avatar avatar_base/ avatar_base/
COPY --chown=avatar:avatar services/ services/
COPY --chown=avatar:avatar wav2lip/ wav2lip/
COPY --chown=avatar:avatar musetalk/ musetalk/
COPY --chown=avatar:avatar client/ client/
COPY --chown=avatar:avatar bench/ bench/
COPY --chown=avatar:avatar scripts/docker-entrypoint.sh scripts/docker-entrypoint.sh

# Production settings baked in; the compose files and .env refine them. AVATAR_PROFILE follows
# the variant (cuda -> gpu, cpu -> cpu).
ARG PROFILE=cpu
ENV AVATAR_PROFILE=${PROFILE} \
    AVATAR_MODELS_DIR=/models \
    AVATAR_CACHE_DIR=/cache \
    AVATAR_HOST=0.0.0.0 \
    AVATAR_PORT=8443 \
    AVATAR_TLS_CERT=/certs/cert.pem \
    AVATAR_TLS_KEY=/certs/key.pem \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# /models: filled once by `python main.py fetch`; /certs: the generated (or your) certificate;
# /cache: prepared avatars, converted models, the access token and conversations.
VOLUME ["/models", "/cache", "/certs"]

# Numeric, so that runtimes that check runAsNonRoot need not resolve the name.
USER 10001:10001

EXPOSE 8443

# Health checks live in docker-compose.yml: each of the five services needs its own probe.
ENTRYPOINT ["/app/scripts/docker-entrypoint.sh"]
CMD ["python", "main.py", "--host", "0.0.0.0", "--port", "8443", "--models-dir", "/models"]
