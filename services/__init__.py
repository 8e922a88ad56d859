"""The talking-avatar pipeline: five services (gateway, asr, llm, tts, lipsync) over ZeroMQ."""

from services.native_caches import bound_native_caches

# Before any service runs a torch kernel: oneDNN's per-shape caches otherwise grow a
# long-running process by hundreds of MiB (services/native_caches.py).
bound_native_caches()
