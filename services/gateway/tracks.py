"""aiortc tracks: the avatar's video and voice out, the user's microphone in.

A track is one method, ``recv()``, and it paces itself on the session's media clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from services.gateway.idle_frames import IdleFrames
from services.gateway.media_clock import SessionMedia
from services.media import (
    SAMPLE_RATE,
    SAMPLES_PER_VIDEO_FRAME,
    VIDEO_CLOCK_RATE,
    VIDEO_FPS,
    VIDEO_PTS_PER_FRAME,
    WEBRTC_AUDIO_PTIME_MS,
    WEBRTC_SAMPLE_RATE,
    WEBRTC_SAMPLES_PER_PACKET,
)
from services.video_convert import rgb_to_i420

logger = logging.getLogger(__name__)

_VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
_AUDIO_TIME_BASE = Fraction(1, WEBRTC_SAMPLE_RATE)
_HALF_UNIT = SAMPLES_PER_VIDEO_FRAME // 2  # 320 samples = 20 ms at 16 kHz


class AvatarVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, media: SessionMedia, idle: IdleFrames) -> None:
        """``idle``: the idle pictures every session shares (the gateway's)."""
        super().__init__()
        self._media = media
        self._idle = idle
        self._index = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._media.pace(self._index, 1 / VIDEO_FPS)
        unit = self._media.unit(index)
        if unit.image is None:
            # Rendered off the event loop (a few ms of warping), once for every session.
            yuv = await self._idle.i420(self._media.anchor() + index / VIDEO_FPS)
        else:
            yuv = rgb_to_i420(unit.image)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = index * VIDEO_PTS_PER_FRAME
        frame.time_base = _VIDEO_TIME_BASE
        self._index = index + 1
        return frame


class AvatarAudioTrack(MediaStreamTrack):
    """48 kHz mono, 20 ms packets, each cut from half of a 16 kHz unit and resampled."""

    kind = "audio"

    def __init__(self, media: SessionMedia) -> None:
        super().__init__()
        self._media = media
        self._packet = 0
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=WEBRTC_SAMPLE_RATE)
        self._fifo = np.zeros(0, dtype=np.int16)

    def _to_48k(self, pcm16k: np.ndarray) -> np.ndarray:
        frame = av.AudioFrame.from_ndarray(pcm16k.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        chunks = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        self._fifo = np.concatenate([self._fifo, *chunks])
        if len(self._fifo) < WEBRTC_SAMPLES_PER_PACKET:
            # Only at the very start, while the resampler fills its filter: pad in front.
            pad = np.zeros(WEBRTC_SAMPLES_PER_PACKET - len(self._fifo), dtype=np.int16)
            self._fifo = np.concatenate([pad, self._fifo])
        out, self._fifo = (
            self._fifo[:WEBRTC_SAMPLES_PER_PACKET],
            self._fifo[WEBRTC_SAMPLES_PER_PACKET:],
        )
        return out

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._media.pace(self._packet, WEBRTC_AUDIO_PTIME_MS / 1000)
        unit = self._media.unit(packet // 2)
        half = packet % 2
        pcm = unit.audio[half * _HALF_UNIT : (half + 1) * _HALF_UNIT]
        samples = self._to_48k(np.ascontiguousarray(pcm, dtype=np.int16))
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = WEBRTC_SAMPLE_RATE
        frame.pts = packet * WEBRTC_SAMPLES_PER_PACKET
        frame.time_base = _AUDIO_TIME_BASE
        self._packet = packet + 1
        return frame


async def forward_microphone(track: MediaStreamTrack, send: Callable[[np.ndarray], None]) -> None:
    """Read the browser's microphone until it ends; hand 16 kHz mono int16 chunks to ``send``
    (which must not wait: the track is read at the pace it arrives, whatever the ASR does)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            logger.debug("microphone track ended")
            return
        for out in resampler.resample(frame):
            send(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))


# aiortc holds back 4 audio packets (80 ms) before it releases one, to absorb jitter that a
# LAN or loopback call hardly has; for the microphone those 80 ms go straight into every
# barge-in and endpoint. One packet of prefetch keeps reordering within 20 ms tolerated.
MIC_PREFETCH_PACKETS = 1


def shorten_mic_jitter_buffer(receiver: object, prefetch: int = MIC_PREFETCH_PACKETS) -> bool:
    """Give an audio RTCRtpReceiver a shorter jitter buffer; False when aiortc's internals
    differ from the ones this was written against (then the default stays, and we log it)."""
    from aiortc.jitterbuffer import JitterBuffer

    name = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, name, None)
    if not isinstance(current, JitterBuffer):
        logger.warning("aiortc internals changed: microphone jitter buffer left at its default")
        return False
    setattr(receiver, name, JitterBuffer(capacity=current.capacity, prefetch=prefetch))
    return True
