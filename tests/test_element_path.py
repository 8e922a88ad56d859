"""bench/element_path.py: the first answer block as the <audio> element plays it (issue 24).

Synthetic pages with a known truth: a speech-like voice sent as 20 ms packets (each with the
sender's audio-level header, as aiortc writes it), delivered by the receiver in 10 ms pulls and
played by the element after Chrome's playout delay; the WebAudio tap's copy of the same voice
output a known lag later on its own 10 ms grid; Chrome's playout clock consistent with one of
the two. And one answer the page really recorded (``bench_e2e --raw``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.element_path import NTP_EPOCH_MS, element_heard, listener_latency
from bench.packet_match import RTP_PER_PACKET

RATE = 48000
ORIGIN = 1_796_000_000_000.0  # performance.timeOrigin, wall clock ms
PLAYOUT_DELAY = 30.0
ANSWER_AT = 6000.0  # page time at which the answer's first packet leaves the element's speaker
IDLE_PACKETS = 150  # idle silence before the answer (digital zeros: header 127)


def _voice(rng) -> np.ndarray:
    """3 s of speech-like sound at 48 kHz: 60 ms of quiet lead-in, then syllables of noise
    with their own loudness, short pauses between words."""
    out = [rng.normal(0, 3e-4, int(0.06 * RATE))]
    for _ in range(14):
        n = int(rng.uniform(0.08, 0.25) * RATE)
        out.append(rng.normal(0, 1, n) * 10 ** rng.uniform(-2.2, -0.8) * np.hanning(n))
        out.append(np.zeros(int(rng.uniform(0.0, 0.09) * RATE)))
    return np.concatenate(out)


def _page(voice: np.ndarray, tap_lag_ms: float, clock_on: str, stretch_ms: float = 0.0,
          drift: float = 0.0) -> tuple[dict, dict]:
    """The page's record and the tap's figures for ``voice`` answered after IDLE_PACKETS of
    silence. ``stretch_ms``: the jitter buffer plays that much extra (an expansion) half a
    second into the answer, which moves every later packet and the tap's copy alike.
    ``drift``: the tap's lag changes by that many ms a second (from ``tap_lag_ms`` at the
    answer's start)."""
    pcm = np.concatenate([np.zeros(IDLE_PACKETS * 960), voice, np.zeros(100 * 960)])
    n = len(pcm) // 960
    start = ANSWER_AT - PLAYOUT_DELAY - IDLE_PACKETS * 20.0  # delivery of packet 0
    # Page time at which each sample leaves the element's speaker (a stretch repeats nothing
    # audible here: it shifts what follows, as NetEq's expansion does).
    at = ANSWER_AT - IDLE_PACKETS * 20.0 + np.arange(len(pcm)) * 1000 / RATE
    at[(IDLE_PACKETS + 25) * 960 :] += stretch_ms
    sources = []
    for p in range(n):
        frame = pcm[p * 960 : (p + 1) * 960]
        rms = float(np.sqrt(np.mean((np.round(frame * 32767) / 32767) ** 2)))
        db = 127 if rms == 0 else min(127, round(-20 * np.log10(rms)))
        level = 0.0 if db >= 127 else 10 ** (-db / 20)
        # Delivered in the 10 ms pull that holds its first sample: pulls every 10 ms.
        delivered = start + np.floor((at[p * 960] - PLAYOUT_DELAY - start) / 10.0) * 10.0
        rtp = (4_000_000_000 + p * RTP_PER_PACKET) % (1 << 32)  # RTP time wraps
        sources.append([delivered + 2.0, ORIGIN + delivered, rtp, level])
    # The tap: its own 10 ms grid (3 ms off the packets'), every block output tap_lag_ms after
    # the element plays it. Frame f is output at page f / RATE * 1000 + out_off.
    out_off = at[0] + tap_lag_ms + 3.0
    tap_times = np.arange(at[0] + tap_lag_ms + 3.0, at[-1] + tap_lag_ms - 10.0, 10.0)
    # tap time = element time + lag + drift x (element time - ANSWER_AT) / 1000
    element_times = (tap_times - tap_lag_ms + drift / 1000 * ANSWER_AT) / (1 + drift / 1000)
    answer = []
    for k, t in enumerate(tap_times):
        i = np.searchsorted(at, element_times[k])
        block = pcm[i : i + 480]
        answer.append([int(round((t - out_off) * RATE / 1000)), float(np.mean(block**2)) if len(block) else 0.0])
    clock = [[c, c * 1000 + out_off, c * 1000 + out_off - 40.0, c] for c in (1.0, 2.0, 3.0)]
    # Chrome's playout clock: sender time (aiortc's wall clock at sending; the answer's first
    # packet is sent at SENT) against the wall time it plays out, every 100 ms.
    sent = ANSWER_AT - 180.0
    first_play = ANSWER_AT + (tap_lag_ms if clock_on == "tap" else 0.0)
    playout = []
    for w in np.arange(ANSWER_AT - 2000.0, ANSWER_AT + 3000.0, 100.0):
        sender = sent + (w - first_play) - (stretch_ms if w > first_play + 500 + stretch_ms else 0.0)
        playout.append({"t": w, "clock": [ORIGIN + sender + NTP_EPOCH_MS, ORIGIN + w],
                        "playout": [PLAYOUT_DELAY / 1000 * 4800, 4800]})
    taps = {"rate": RATE, "answer": answer, "clock": clock, "time_origin_ms": ORIGIN,
            "element": {"sources": sources, "playout": playout}}
    loud = np.flatnonzero(np.array([a[1] for a in answer]) > 1e-4)
    tap = {"tap_heard_page_ms": answer[loud[0]][0] / RATE * 1000 + out_off, "sent_page_ms": sent}
    return taps, tap


@pytest.fixture(scope="module")
def voice():
    return _voice(np.random.default_rng(7))


@pytest.mark.parametrize("lag", [37.0, 0.0, 80.0, -20.0])
def test_the_tap_lag_and_the_elements_first_block_read_back(voice, lag):
    taps, tap = _page(voice, lag, clock_on="element")
    r = element_heard(taps, tap)
    assert r["playout_delay_ms"] == pytest.approx(PLAYOUT_DELAY)
    # 10 ms delivery pulls against a 20 ms packet grid: good to a few ms.
    assert r["tap_minus_element_ms"] == pytest.approx(lag, abs=4), r
    assert r["element_heard_page_ms"] == pytest.approx(tap["tap_heard_page_ms"] - lag, abs=4)
    # Chrome's playout clock, made consistent with the element, agrees with the element...
    assert r["clock_minus_element_ms"] == pytest.approx(0.0, abs=4), r
    assert r["clock_minus_tap_ms"] == pytest.approx(-lag, abs=4), r
    # ...and the answer's first packet is found: its lead-in is quiet but not silent.
    assert r["first_packet_lead_ms"] == pytest.approx(tap["tap_heard_page_ms"] - lag - ANSWER_AT, abs=4)


def test_a_playout_clock_that_agrees_with_the_tap_says_so(voice):
    taps, tap = _page(voice, 37.0, clock_on="tap")
    r = element_heard(taps, tap)
    assert r["clock_minus_tap_ms"] == pytest.approx(0.0, abs=4), r
    assert r["clock_minus_element_ms"] == pytest.approx(37.0, abs=4), r


def test_a_stretch_in_the_jitter_buffer_does_not_throw_the_match(voice):
    """Matched by packet count, the packets after a 60 ms expansion would sit 3 packets off
    the tap's record; matched in time they line up."""
    taps, tap = _page(voice, 37.0, clock_on="element", stretch_ms=60.0)
    r = element_heard(taps, tap)
    assert r["tap_minus_element_ms"] == pytest.approx(37.0, abs=4), r
    assert r["element_fit"]["level_error_db"] < 3.0


def test_the_lag_is_the_one_at_the_first_block_when_the_tap_drifts(voice):
    """The WebAudio copy's lag drifted by 50 ms over 4 s in one recorded run: the first block's
    lag is the one that counts. Fitted over the whole opening it would read 25 ms off."""
    taps, tap = _page(voice, 37.0, clock_on="element", drift=-12.5)
    r = element_heard(taps, tap)
    at_first = 37.0 - 12.5 * (tap["tap_heard_page_ms"] - 37.0 - ANSWER_AT) / 1000
    assert r["tap_minus_element_ms"] == pytest.approx(at_first, abs=10), r
    assert r["clock_minus_element_ms"] == pytest.approx(0.0, abs=4), r


def test_without_the_elements_record_the_headline_is_left_open(voice):
    taps, tap = _page(voice, 37.0, clock_on="element")
    taps["element"] = {"sources": [], "playout": []}
    assert element_heard(taps, tap)["element_heard_page_ms"] is None
    # listener_latency keeps the tap's figure apart and does not pass it off as the element's.
    question = (np.sin(np.arange(16000) / 3) * 8000).astype(np.int16)
    taps["mic"] = []
    taps["gum_at_ms"] = 1000.0
    r = listener_latency(taps, [], question, 3.0)
    assert r["total_ms"] is None and r["tap_total_ms"] is not None


def test_a_recorded_answer():
    """One answer as headless Chromium recorded it (bench_e2e --raw, 2026-12-06): the tap's copy
    played 34 ms after the element's, and Chrome's playout clock sided with the element."""
    run = json.loads((Path(__file__).parent / "data" / "element_path_run.json").read_text())
    r = element_heard(run["taps"], run)
    assert r["tap_minus_element_ms"] == pytest.approx(34.0, abs=2), r
    assert r["element_heard_page_ms"] == pytest.approx(run["tap_heard_page_ms"] - r["tap_minus_element_ms"])
    assert r["element_fit"]["level_error_db"] < 2.0
    assert abs(r["clock_minus_element_ms"]) < 10 and r["clock_minus_tap_ms"] < -25, r


@pytest.mark.browser
@pytest.mark.slow
def test_a_real_page_records_the_elements_path(avatar, question):
    """Headless Chromium asks the avatar a question: the page records the element's path, the
    tap's copy reads later than the element, and Chrome's playout clock sides with the element."""
    from bench.browser import converse
    from tests.conftest import LEAD_S, SPOKEN_QUESTION
    from tests.speech import mouth_box_of_default_avatar, piper_speech

    wav, speech_end_s = question
    conv = converse(avatar.url, wav, speech_end_s, mouth_box_of_default_avatar())
    r = listener_latency(conv.taps, conv.events["ws"], piper_speech(SPOKEN_QUESTION), LEAD_S)
    print(f"\nheard: element {r['total_ms']} ms, tap {r['tap_total_ms']} ms; tap - element "
          f"{r['tap_minus_element_ms']} ms; playout clock - element {r['clock_minus_element_ms']} ms")
    assert r["element_fit"]["level_error_db"] < 4.0, r["element_fit"]
    assert 5 <= r["tap_minus_element_ms"] <= 80
    assert abs(r["clock_minus_element_ms"]) < 20 and r["clock_minus_tap_ms"] < 0
    assert r["total_ms"] == pytest.approx(r["tap_total_ms"] - r["tap_minus_element_ms"], abs=0.2)
    assert r["uplink_vad_ms"] + r["server_ms"] + r["downlink_ms"] == pytest.approx(r["total_ms"], abs=1)
