"""WebRTC clients for the benchmarks that talk to a running avatar (aiortc, tests/rtc_client.py).

bench_concurrency, bench_soak and bench_stalled_llm each hold N calls at once and speak test
speech into their microphones; this is the part they share: the speech at the microphone's rate,
and N calls entered into one exit stack and connected before a common deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import numpy as np

CONNECT_TIMEOUT_S = 30.0  # for every call of a batch to connect, from when the last one was made


def speech_48k(text: str) -> np.ndarray:
    """Test speech (Piper, 16 kHz) resampled to the WebRTC microphone's 48 kHz, as int16."""
    from scipy.signal import resample_poly

    from tests.speech import piper_speech

    pcm = resample_poly(piper_speech(text).astype(np.float32), 3, 1)
    return np.clip(pcm, -32768, 32767).astype(np.int16)


def _is_connected(e: dict) -> bool:
    return e.get("type") == "webrtc" and e.get("state") == "connected"


async def connect_clients(
    stack: AsyncExitStack,
    base_url: str,
    n: int,
    client_class: Callable[[str], Any] | None = None,
    mic_class: Callable[[], Any] | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> list:
    """``n`` WebRTC calls to ``base_url``, each closed when ``stack`` closes, all connected.

    ``client_class`` defaults to tests/rtc_client.RtcClient; ``mic_class``, if given, replaces
    each client's microphone track before its call is made. Raises TimeoutError when a call has
    not connected within ``timeout_s`` (one deadline for the whole batch, so N slow calls cannot
    add up to N timeouts).
    """
    if client_class is None:
        from tests.rtc_client import RtcClient

        client_class = RtcClient
    clients = []
    for _ in range(n):
        client = client_class(base_url)
        if mic_class is not None:
            client.mic = mic_class()
        clients.append(await stack.enter_async_context(client))
    deadline = time.monotonic() + timeout_s
    for i, c in enumerate(clients):
        try:
            await c.wait_event(_is_connected, max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise TimeoutError(f"client {i}'s WebRTC call did not connect within {timeout_s:.0f} s") from None
    return clients
