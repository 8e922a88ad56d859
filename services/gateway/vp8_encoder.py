"""The VP8 encoder for the avatar's video: aiortc's, with libvpx's temporal denoiser off.

aiortc opens libvpx with ``noise-sensitivity 4``, a denoiser meant for camera noise. Our
frames are rendered, so there is no noise to remove: on the avatar's idle frames (512x512,
500 kbit/s) the denoiser cost about 1.3 ms of the 3-4.5 ms each frame took to encode and
decode, and blurred the picture (PSNR 41.0 dB with it, 43.4 dB without, same bitrate).
At 25 fps for every session that is 3 % of a core per session.

aiortc sets its codec options inline when it opens the codec, so this encoder opens the codec
itself, with the same rate control, before aiortc's ``encode`` would; aiortc then finds an open
codec of the right size and bitrate and uses it. Packetization, keyframes and bitrate changes
from the receiver's REMB stay aiortc's.
"""

from __future__ import annotations

import logging
import os

import av
from aiortc.codecs.vpx import Vp8Encoder, number_of_threads

logger = logging.getLogger(__name__)

# When the receiver's bitrate estimate moves by more than this, aiortc reopens its codec.
_REOPEN_BITRATE_CHANGE = 0.1


def libvpx_options(bitrate: int) -> dict[str, str]:
    """Real-time CBR at ``bitrate`` for a rendered picture: no denoiser, no look-ahead."""
    rate = str(bitrate)
    return {
        "deadline": "realtime",
        "cpu-used": "-6",  # aiortc's speed/quality point for real time
        "lag-in-frames": "0",  # every frame leaves at once: no added latency
        "noise-sensitivity": "0",  # rendered frames have no sensor noise (the reason for this file)
        # Constant bitrate: minrate = maxrate = bitrate, with a one-second buffer.
        "minrate": rate,
        "maxrate": rate,
        "bufsize": rate,
        "undershoot-pct": "100",
        "overshoot-pct": "15",
        "static-thresh": "1",
        "partitions": "0",  # one token partition, as aiortc's packetizer expects
    }


class RenderedVp8Encoder(Vp8Encoder):
    """aiortc's Vp8Encoder, whose codec opens with :func:`libvpx_options`."""

    def encode(self, frame: av.VideoFrame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        if self._needs_codec(frame):
            self.codec = self._open(frame)
        return super().encode(frame, force_keyframe)

    def _needs_codec(self, frame: av.VideoFrame) -> bool:
        codec = self.codec
        if codec is None:
            return True
        changed = abs(self.target_bitrate - codec.bit_rate) / codec.bit_rate > _REOPEN_BITRATE_CHANGE
        return changed or (frame.width, frame.height) != (codec.width, codec.height)

    def _open(self, frame: av.VideoFrame) -> av.VideoCodecContext:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height = frame.width, frame.height
        codec.bit_rate = self.target_bitrate
        codec.pix_fmt = "yuv420p"
        codec.gop_size = 3000  # keyframes only when a receiver asks for one (PLI/FIR)
        codec.qmin, codec.qmax = 2, 56
        codec.options = libvpx_options(self.target_bitrate)
        codec.thread_count = number_of_threads(frame.width * frame.height, os.cpu_count() or 1)
        return codec


def use_rendered_vp8_encoder(transceiver: object) -> bool:
    """Give a negotiated video transceiver's sender our VP8 encoder, before its first frame.

    False (aiortc's own encoder stays) when the call negotiated another codec, the sender has
    already made its encoder, or aiortc's internals differ from those this was written against.
    """
    codecs = getattr(transceiver, "_codecs", None)
    sender = getattr(transceiver, "sender", None)
    name = "_RTCRtpSender__encoder"
    if not codecs or codecs[0].mimeType.lower() != "video/vp8":
        return False
    if sender is None or not hasattr(sender, name):
        logger.warning("aiortc internals changed: video encoder left at aiortc's default")
        return False
    if getattr(sender, name) is not None:
        return False
    setattr(sender, name, RenderedVp8Encoder())
    return True
