"""The first answer block as the ``<audio>`` element plays it: what a listener hears (issue 24).

``bench.heard`` takes the answer's first 10 ms block above -40 dBFS from an AudioWorklet tap, at
the time its AudioContext outputs it. That tap is a WebAudio *copy* of the received voice; the
listener hears the ``<audio>`` element's copy, and issue 25 found the WebAudio copy 31-42 ms
later (docs/visemes.md). Here the same block is timed on the element's own path:

1. **when the element plays each packet.** At its delivery time plus Chrome's playout delay
   (``media-playout``), from the receiver's record (``bench.packet_match``, shared with
   ``bench.av_align``);
2. **how much later the tap's copy plays.** The tap's level over each packet's 20 ms, shifted
   in 1 ms steps, against the packet's audio-level header (the sender's RMS, before Opus):
   the shift with the smallest level error around the first block is ``tap_minus_element_ms``,
   and the element's first block is the tap's first block minus it. The receiver delivers in
   10 ms pulls, so a packet's delivery time is good to about 10 ms.
3. **an independent check: Chrome's playout clock.** ``estimatedPlayoutTimestamp`` says which
   sender time plays out at a stats sample's time. aiortc's sender reports map RTP time to its
   wall clock at sending (the same clock the gateway's ``first_audio_ms`` ends on, one machine),
   so the answer's first packet, sent when the first unit left the media clock, plays out at
   that moment plus (stats time - sender time). Compared with the element's time for the same
   packet (the first after the idle silence, whose header is 127) and with the tap's.
"""

from __future__ import annotations

import statistics

import numpy as np

from bench.heard import answer_blocks, heard_latency
from bench.packet_match import FLOOR_DB, PACKET_MS, SILENT_DB, Packets, packets, playout_delay_ms

# The stretch of the tap that is matched to packets: around the first loud block, where the
# lag matters. The WebAudio copy's lag drifts over an answer (in one run of 20 it went from 34
# to -19 ms over 4 s), so a fit over the whole opening can miss the first block's by 25 ms;
# 2 s (about 80 packets inside the search) still match unambiguously.
BEFORE_MS = 500.0
AFTER_MS = 1500.0
BLOCK_MS = 10.0
# Where the tap's copy may lie against the element's: 31-42 ms later in issue 25's runs.
LAGS_MS = np.arange(-150.0, 251.0, 1.0)
NTP_EPOCH_MS = 2_208_988_800_000.0  # 1900-01-01 to 1970-01-01
# Chrome's playout clock samples used: the first second of the answer.
CLOCK_SPAN_MS = 1000.0


def tap_minus_element_ms(blocks: list[tuple[float, float]], rec: Packets, delay_ms: float) -> tuple[float | None, dict]:
    """How much later the tap outputs the voice than the element plays it: the shift (1 ms
    steps) at which the tap's level over each packet's 20 ms matches the packet's own header
    best. ``blocks``: the tap's contiguous 10 ms blocks (page time output, mean square);
    ``delay_ms``: the element's playout delay.

    Matched in time, not by packet count: when Chrome's jitter buffer stretches or squeezes
    the voice (it does on a loaded machine) both copies carry the same stretched audio, but
    the packets no longer sit 20 ms apart."""
    if len(blocks) < 100:
        return None, {}
    edges = np.append([b[0] for b in blocks], blocks[-1][0] + BLOCK_MS)
    energy = np.concatenate([[0.0], np.cumsum([b[1] * BLOCK_MS for b in blocks])])
    plays = rec.delivered_ms + delay_ms
    inside = (plays >= edges[0] - LAGS_MS[0]) & (plays + PACKET_MS <= edges[-1] - LAGS_MS[-1])
    if inside.sum() < 50:
        return None, {}
    want = np.minimum(rec.level_db[inside], FLOOR_DB)
    start = plays[inside][None, :] + LAGS_MS[:, None]
    mean_square = (np.interp(start + PACKET_MS, edges, energy) - np.interp(start, edges, energy)) / PACKET_MS
    got = np.minimum(-10 * np.log10(np.maximum(mean_square, 1e-13)), FLOOR_DB)
    err = np.abs(got - want[None, :]).mean(axis=1)
    best = int(np.argmin(err))
    if best in (0, len(LAGS_MS) - 1):
        return None, {"level_error_db": round(float(err[best]), 2)}  # a fit at the edge is no fit
    return float(LAGS_MS[best]), {"level_error_db": round(float(err[best]), 2), "packets": int(inside.sum())}


def first_packet_before(rec: Packets, delay_ms: float, at_ms: float) -> int | None:
    """The answer's first packet: walking back from the one playing at ``at_ms`` through the
    packets that carry sound, the first after the idle silence (header 127)."""
    playing = np.flatnonzero(rec.delivered_ms + delay_ms <= at_ms)
    if not len(playing):
        return None
    i = int(playing[-1])
    while i > 0 and rec.level_db[i - 1] < SILENT_DB - 0.5 and rec.index[i] - rec.index[i - 1] == 1:
        i -= 1
    return i


def clock_offset_ms(playout: list, time_origin: float, from_ms: float) -> float | None:
    """Chrome's playout clock: page time minus the sender's wall time of what plays out then,
    median over the samples in ``CLOCK_SPAN_MS`` from page time ``from_ms``."""
    offsets = []
    for row in playout:
        clock = row.get("clock")
        if not clock or not clock[0] or not clock[1]:
            continue
        sender = clock[0] - NTP_EPOCH_MS if clock[0] > 3e12 else clock[0]  # NTP to Unix ms
        wall = clock[1] if clock[1] > 1e12 else clock[1] + time_origin
        if from_ms <= wall - time_origin <= from_ms + CLOCK_SPAN_MS:
            offsets.append(wall - sender)
    return statistics.median(offsets) if offsets else None


def element_heard(taps: dict, tap: dict) -> dict:
    """The element path's figures for one answer, from the page's record (``taps``, as
    ``bench.browser`` collects them) and ``bench.heard.heard_latency``'s result (``tap``)."""
    out: dict = {"element_heard_page_ms": None, "tap_minus_element_ms": None, "element_fit": {},
                 "playout_delay_ms": None, "clock_minus_element_ms": None, "clock_minus_tap_ms": None}
    element = taps.get("element") or {}
    rec = packets(element.get("sources") or [], taps["time_origin_ms"])
    delay = playout_delay_ms(element.get("playout") or [])
    heard = tap.get("tap_heard_page_ms")
    if rec is None or delay is None or heard is None:
        return out
    out["playout_delay_ms"] = round(delay, 1)
    blocks = [b for b in answer_blocks(taps) if heard - BEFORE_MS <= b[0] < heard + AFTER_MS]
    lag, fit = tap_minus_element_ms(blocks, rec, delay)
    out["element_fit"] = fit
    if lag is None:
        return out
    out["tap_minus_element_ms"] = round(lag, 1)
    first = heard - lag
    out["element_heard_page_ms"] = round(first, 1)
    sent = tap.get("sent_page_ms")
    i0 = first_packet_before(rec, delay, first + PACKET_MS / 2)
    if sent is None or i0 is None:
        return out
    start = float(rec.delivered_ms[i0]) + delay  # the answer's first packet, on the element
    offset = clock_offset_ms(element.get("playout") or [], taps["time_origin_ms"], start)
    if offset is not None:
        by_clock = sent + offset
        out["first_packet_lead_ms"] = round(first - start, 1)
        out["clock_minus_element_ms"] = round(by_clock - start, 1)
        out["clock_minus_tap_ms"] = round(by_clock - (start + lag), 1)
    return out


def listener_latency(taps: dict, ws_events: list[dict], question_16k: np.ndarray, lead_s: float) -> dict:
    """``bench.heard.heard_latency`` with the first answer block taken on the element's path:
    ``total_ms`` and ``downlink_ms`` are the element's (None when its record could not be
    matched), ``tap_total_ms`` and ``tap_downlink_ms`` the AudioWorklet tap's."""
    r = heard_latency(taps, ws_events, question_16k, lead_s)
    r.update(element_heard(taps, r))
    r["tap_total_ms"], r["tap_downlink_ms"] = r["total_ms"], r["downlink_ms"]
    first = r["element_heard_page_ms"]
    r["total_ms"] = None if first is None else round(first - r["speech_end_page_ms"], 1)
    r["downlink_ms"] = None if first is None or r["sent_page_ms"] is None else round(first - r["sent_page_ms"], 1)
    return r
