"""One session's long decode never delays another session's audio, onsets or endpoints.

The ASR's shared inbox hands each chunk to its session without waiting, and each session's VAD,
endpointing and decodes run on its own thread. Here session "slow" ends an utterance whose decode
takes 2 s (a long Whisper decode on a busy CPU); meanwhile session "quick" starts and ends an
utterance, and its onset and final arrive as if "slow" were idle. The audio "slow" sent during
its decode is not lost: it is heard, in order, once the decode is done.
"""

import asyncio
import time

import numpy as np

from services import messages as m
from services.asr.service import AsrService
from services.asr.settings import AsrSettings
from services.media import SAMPLE_RATE
from tests.fakes import RecordingSender

CHUNK = SAMPLE_RATE // 50  # 20 ms, as the gateway forwards the microphone
DECODE_S = 2.0


def _loudness_vad(window: np.ndarray) -> float:
    """Speech = a loud window: the test's audio is loud tone or digital silence."""
    return 1.0 if np.abs(window).mean() > 1000 else 0.0


class _Stream:
    def __init__(self, engine: "_Engine", slow: bool) -> None:
        self._engine = engine
        self._slow = slow
        self.samples = 0

    def accept(self, pcm: np.ndarray) -> str:
        self.samples += len(pcm)
        return ""

    def finish(self) -> str:
        if self._slow:
            self._engine.loop.call_soon_threadsafe(self._engine.decoding.set)
            time.sleep(DECODE_S)  # the blocking decoder call (it releases the GIL, as ctranslate2 does)
        return f"{self.samples} samples"


class _Engine:
    """The first utterance it hears (session "slow"'s) takes DECODE_S to decode; others none."""

    name = "fake"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.decoding = asyncio.Event()
        self.streams = 0

    def new_stream(self) -> _Stream:
        self.streams += 1
        return _Stream(self, slow=self.streams == 1)


def _utterance(speech_s: float, silence_s: float) -> list[np.ndarray]:
    pcm = np.concatenate([
        np.full(int(SAMPLE_RATE * speech_s), 8000, np.int16),
        np.zeros(int(SAMPLE_RATE * silence_s), np.int16),
    ])
    return [pcm[i : i + CHUNK] for i in range(0, len(pcm), CHUNK)]


async def test_a_long_decode_of_one_session_does_not_delay_another():
    events = RecordingSender()
    engine = _Engine(asyncio.get_running_loop())
    service = AsrService(engine, lambda: _loudness_vad, AsrSettings(tentative_silence_ms=0), events)
    handled_ms: list[float] = []

    async def feed(session: str, chunks: list[np.ndarray], realtime: bool) -> None:
        for chunk in chunks:
            started = time.perf_counter()
            await service.handle(m.AudioIn(session, 1, chunk))
            handled_ms.append((time.perf_counter() - started) * 1000)
            if realtime:
                await asyncio.sleep(CHUNK / SAMPLE_RATE)

    def arrived(kind: type, session: str, final: bool | None = None) -> list:
        return [e for e in events.of(kind) if e.session == session and (final is None or e.final == final)]

    async def until(pred, timeout_s: float = 10.0) -> None:  # noqa: ANN001
        async with asyncio.timeout(timeout_s):
            while not pred():
                await events.event.wait()
                events.event.clear()

    try:
        await feed("slow", _utterance(1.0, 0.6), realtime=False)
        await asyncio.wait_for(engine.decoding.wait(), 5)
        decode_started = time.monotonic()
        # While "slow" decodes: "quick" talks in real time, and "slow" goes on sending 1.5 s of
        # audio (75 chunks: more than a blocking hand-off of 25 would ever have taken).
        quick = asyncio.create_task(feed("quick", _utterance(0.5, 0.5), realtime=True))
        more = asyncio.create_task(feed("slow", _utterance(0.6, 0.9), realtime=True))
        await until(lambda: arrived(m.Transcript, "quick", final=True))
        quick_done_s = time.monotonic() - decode_started
        await asyncio.gather(quick, more)
        assert arrived(m.SpeechStarted, "quick")
        assert quick_done_s < DECODE_S - 0.5, f"quick's final came {quick_done_s:.2f} s into slow's decode"
        assert max(handled_ms) < 50, f"a hand-off waited {max(handled_ms):.0f} ms"
        # Slow's second utterance, sent during its decode, is heard whole once the decode ends.
        await until(lambda: len(arrived(m.Transcript, "slow", final=True)) >= 2)
        first, second = (t.text for t in arrived(m.Transcript, "slow", final=True))
        # The recogniser hears the speech with its pre-roll and the trailing silence up to the
        # endpoint; all 0.6 s of the second utterance's tone must be in it.
        assert int(second.split()[0]) >= int(0.6 * SAMPLE_RATE), (first, second)
    finally:
        await service._lanes.aclose()
        service._pool.shutdown(wait=True)
