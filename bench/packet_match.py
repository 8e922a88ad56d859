"""The voice on the ``<audio>`` element's own path: the receiver's per-packet delivery record.

Chrome's ``RTCRtpReceiver.getSynchronizationSources()`` says, for the latest RTP packet of the
avatar's voice, when the receiver delivered it for playout (``timestamp``, the wall clock), its
RTP timestamp, and the sender's audio-level header (aiortc writes the RMS of each 20 ms packet
before Opus, in dBov). A page that polls it every 5 ms gets every packet's delivery time; add
Chrome's playout delay of the element's output (``media-playout`` stats) and it is when that
packet leaves the element's speaker.

Which packet is which is found by level: a known level sequence (the avatar's own voice made
again, ``bench.av_align``; or the page's WebAudio tap of the same answer, ``bench.element_path``)
is slid along the packets and the offset with the smallest level error wins. Shared by both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RTP_PER_PACKET = 960  # 48 kHz audio clock, 20 ms packets
PACKET_MS = 20.0
SILENT_DB = 127.0  # the header's value for digital silence (the avatar's idle voice)
# Below this the levels say nothing about the voice (Opus's floor, idle silence): compared clipped.
FLOOR_DB = 90.0


@dataclass(frozen=True)
class Packets:
    """The receiver's record, one row per RTP packet, in delivery order."""

    index: np.ndarray  # packet number from the first one seen (RTP timestamps wrap)
    delivered_ms: np.ndarray  # page time at which the receiver delivered it for playout
    level_db: np.ndarray  # the sender's audio-level header, dBov (0 loudest .. 127 silent)


def packets(sources: list, time_origin: float) -> Packets | None:
    """Rows ``[poll time, timestamp, rtpTimestamp, audioLevel]`` as the page polled them;
    None when there are too few (under 100 packets) to match anything."""
    rows = [r for r in sources if r[2] is not None and r[3] is not None]
    if len(rows) < 100:
        return None
    first: dict[int, tuple[float, float]] = {}
    for _, ts, rtp, level in rows:
        t = ts - time_origin if ts > 1e12 else ts  # Chrome reports the wall clock
        if int(rtp) not in first or t < first[int(rtp)][0]:
            first[int(rtp)] = (t, level)
    rtps = np.array(sorted(first, key=lambda r: first[r][0]), np.int64)
    delivered = np.array([first[r][0] for r in rtps])
    level_db = np.array([-20 * np.log10(first[r][1]) if first[r][1] > 0 else SILENT_DB for r in rtps])
    index = np.round(((rtps - rtps[0]) % (1 << 32)) / RTP_PER_PACKET).astype(int)
    return Packets(index, delivered, level_db)


def levels_db(voice: np.ndarray) -> np.ndarray:
    """The audio-level header of each 20 ms packet of a 16 kHz voice (dBov, as aiortc sets it)."""
    n = len(voice) // 320
    rms = np.sqrt(np.mean((voice[: n * 320].reshape(n, 320).astype(np.float64)) ** 2, axis=1))
    return np.clip(-20 * np.log10(np.maximum(rms, 1e-9)), 0, SILENT_DB)


def match(rec: Packets, ref_db: np.ndarray, around_ms: float | None = None) -> tuple[int | None, float]:
    """The packet number of ``ref_db``'s first packet (``rec.index - c`` is the reference's
    packet), and the mean level error in dB there. ``around_ms``: the page time at which that
    first packet is thought to be delivered, to search within 300 ms of it."""
    n = len(ref_db)
    best, best_c = np.inf, None
    for c in range(int(rec.index.min()) - n, int(rec.index.max()) + 1):
        k = rec.index - c
        inside = (k >= 0) & (k < n)
        if inside.sum() < 0.8 * n:
            continue
        if around_ms is not None:
            if abs(float(np.median(rec.delivered_ms[inside] - k[inside] * PACKET_MS)) - around_ms) > 300:
                continue
        err = float(np.abs(np.minimum(rec.level_db[inside], FLOOR_DB) - np.minimum(ref_db[k[inside]], FLOOR_DB)).mean())
        if err < best:
            best, best_c = err, c
    return best_c, best


def playout_delay_ms(playout: list) -> float | None:
    """Chrome's average delay from delivery to the element's output over the call, from the
    ``media-playout`` stats rows ``{"playout": [totalPlayoutDelay s, totalSamplesCount]}``."""
    rows = [r["playout"] for r in playout if r.get("playout") and r["playout"][1]]
    return 1000.0 * rows[-1][0] / rows[-1][1] if rows else None
