"""The first answer block as the ``<audio>`` element plays it: what a listener hears (issue 24).

``bench.heard`` takes the answer's first 10 ms block above -40 dBFS from an AudioWorklet tap, at
the time its AudioContext outputs it. That tap is a WebAudio *copy* of the received voice; the
listener hears the ``<audio>`` element's copy, and issue 25 found the WebAudio copy 31-42 ms
later (docs/visemes.md). Here the same block is timed on the element's own path:

1. **which packet is which.** The tap's blocks around the answer's opening, paired into 20 ms
   levels, are slid along the receiver's packets (their audio-level headers) until the levels
   match (``bench.packet_match``, as ``bench.av_align`` does with a reference voice). The tap's
   10 ms grid against the 20 ms packets: both pairings are tried and the better kept, so the
   result is good to about +-5 ms;
2. **when the element plays it.** A packet leaves the element's speaker at its delivery time
   plus Chrome's playout delay (``media-playout``). ``tap_minus_element_ms`` is the median, over
   the matched packets, of the tap's time minus the element's; the element's first block is the
   tap's first block minus that lag.
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
from bench.packet_match import PACKET_MS, SILENT_DB, Packets, match, packets, playout_delay_ms

# The stretch of the tap that is matched to packets: from just before the first loud block
# through the answer's opening (a few hundred packets, enough for an unambiguous match).
BEFORE_MS = 500.0
AFTER_MS = 4000.0
NTP_EPOCH_MS = 2_208_988_800_000.0  # 1900-01-01 to 1970-01-01
# Chrome's playout clock samples used: the first second of the answer.
CLOCK_SPAN_MS = 1000.0


def tap_minus_element_ms(blocks: list[tuple[float, float]], rec: Packets, delay_ms: float) -> tuple[float | None, dict]:
    """How much later the tap outputs a block than the element plays it: ``blocks`` are the
    tap's contiguous 10 ms blocks (page time output, mean square), ``delay_ms`` the element's
    playout delay."""
    best: tuple[float, float, dict] | None = None
    for phase in (0, 1):
        b = blocks[phase:]
        n = len(b) // 2
        if n < 50:
            continue
        t = np.array([b[2 * j][0] for j in range(n)])
        ms = np.array([(b[2 * j][1] + b[2 * j + 1][1]) / 2 for j in range(n)])
        ref_db = np.clip(-10 * np.log10(np.maximum(ms, 1e-13)), 0, SILENT_DB)
        c, err = match(rec, ref_db, around_ms=float(t[0]) - delay_ms)
        if c is None:
            continue
        k = rec.index - c
        inside = (k >= 0) & (k < n)
        lag = float(np.median(t[k[inside]] - (rec.delivered_ms[inside] + delay_ms)))
        if best is None or err < best[0]:
            best = (err, lag, {"level_error_db": round(err, 2), "packets_matched": int(inside.sum()), "of": n,
                               "phase": phase})
    return (None, {}) if best is None else (best[1], best[2])


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
