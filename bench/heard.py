"""A listener's latency from the page's level taps, split in three by the gateway's timestamps.

- end of speech: the question's last 10 ms block above -40 dBFS (``bench.levels``), placed on
  the page's clock by where the microphone tap first hears the voice start;
- first audio: the page's first 10 ms block of the avatar's played voice above -40 dBFS;
- the gateway's ``stats`` event of the answered turn gives its end of speech
  (``speech_end_unix_ms``, the ASR's last voiced window) and ``first_audio_ms`` (until the
  first unit of the answer left the media clock). Page time + ``performance.timeOrigin`` is the
  same wall clock on one machine, so the total splits into

      uplink_vad_ms  = gateway end of speech - end of speech        (Opus, network, VAD window)
      server_ms      = first_audio_ms                                (ASR, LLM, TTS, lip-sync, clock)
      downlink_ms    = first audio heard - first unit sent           (Opus, jitter buffer, playout)

The taps stamp each block with its audio frame. A frame becomes page time through the context's
clock pairs: ``getOutputTimestamp()`` says when a frame is *output* (heard), and the earliest
``performance.now()`` at which ``currentTime`` had passed a frame says when it was *processed*
(for the microphone: just after it was captured).
"""

from __future__ import annotations

import statistics

import numpy as np

from bench.levels import first_loud_block, longest_quiet_ms, voice_end_s, voice_onset_s

MIC_RATE = 16000
# The answer's opening, where its first clause hands over to the second: a pause there longer
# than a sentence break is an answer broken up (the price of starting too early).
OPENING_MS = 4000


def _offsets(taps: dict) -> tuple[float, float]:
    """(output offset, processing offset) in ms: page time = frame / rate * 1000 + offset."""
    clock = taps.get("clock") or []
    out = [p - c * 1000 for c, p, _, _ in clock if p and p > 0]
    proc = [n - cur * 1000 for _, _, n, cur in clock]
    if not out or not proc:
        raise ValueError("the page's audio tap recorded no clock pairs")
    return statistics.median(out), min(proc)


def _blocks(frames: list, rate: float, offset_ms: float) -> list[tuple[float, float]]:
    return [(f / rate * 1000 + offset_ms, ms) for f, ms in frames]


def answer_blocks(taps: dict) -> list[tuple[float, float]]:
    """(page time at which the tap's copy is output, mean square) of every 10 ms block of the
    avatar's voice."""
    return _blocks(taps.get("answer") or [], taps["rate"], _offsets(taps)[0])


def heard_latency(taps: dict, ws_events: list[dict], question_16k: np.ndarray, lead_s: float) -> dict:
    """The spans of one question (``question_16k``, the voice alone, played ``lead_s`` into
    the fake microphone's file) and the answer the page played. Values are ms; a span is
    None when its timestamp is missing (e.g. no answer was heard)."""
    rate = taps.get("rate")
    if not rate:
        raise ValueError("the page's audio tap did not start")
    out_off, proc_off = _offsets(taps)
    onset_s = voice_onset_s(question_16k, MIC_RATE)
    end_s = voice_end_s(question_16k, MIC_RATE)
    if onset_s is None or end_s is None:
        raise ValueError("the question has no block above -40 dBFS")
    gum = taps.get("gum_at_ms") or 0.0
    # The file starts playing at getUserMedia: a first guess, used as a floor for the search.
    gum_end = gum + (lead_s + end_s) * 1000
    mic_onset = first_loud_block(_blocks(taps.get("mic") or [], rate, proc_off), gum)
    if mic_onset is not None:
        speech_end = mic_onset + (end_s - onset_s) * 1000
        anchor = "mic"
    else:
        speech_end, anchor = gum_end, "getUserMedia"
    answer = answer_blocks(taps)
    heard = first_loud_block(answer, speech_end)
    result = {
        "anchor": anchor,
        "anchor_minus_gum_ms": round(speech_end - gum_end, 1),
        "question_s": round(end_s - onset_s, 2),
        "output_minus_process_ms": round(out_off - proc_off, 1),
        "total_ms": None if heard is None else round(heard - speech_end, 1),
        "opening_longest_pause_ms": None if heard is None else longest_quiet_ms(answer, heard, heard + OPENING_MS),
        "uplink_vad_ms": None,
        "server_ms": None,
        "downlink_ms": None,
        "stages": {},
        # Page times, for the element path (bench.element_path): the question's end, the
        # answer's first loud block as the tap plays it, and when the server sent its first unit.
        "speech_end_page_ms": round(speech_end, 1),
        "tap_heard_page_ms": None if heard is None else round(heard, 1),
        "sent_page_ms": None,
    }
    stats = [e for e in ws_events if e.get("type") == "stats" and e.get("speech_end_unix_ms")
             and (e.get("stages") or {}).get("first_audio_ms") is not None]
    if stats:
        last = stats[-1]
        origin = taps["time_origin_ms"]
        server_end = last["speech_end_unix_ms"]
        sent = server_end + last["stages"]["first_audio_ms"]
        result["stages"] = last["stages"]
        result["uplink_vad_ms"] = round(server_end - (origin + speech_end), 1)
        result["server_ms"] = round(last["stages"]["first_audio_ms"], 1)
        result["sent_page_ms"] = round(sent - origin, 1)
        if heard is not None:
            result["downlink_ms"] = round(origin + heard - sent, 1)
        result["server_parts"] = server_parts(last["stages"])
    return result


# The server span's stages, in the order the answer passes them: each measured by its stage
# from when its input arrived, so what is left is hops, waits and the media clock's tick.
SERVER_PARTS = ("llm_request_ms", "llm_first_clause_ms", "tts_first_audio_ms", "lipsync_first_frame_ms")


def server_parts(stages: dict) -> dict:
    parts = {k: stages.get(k) for k in SERVER_PARTS}
    if all(v is not None for v in parts.values()) and stages.get("first_audio_ms") is not None:
        parts["rest_ms"] = round(stages["first_audio_ms"] - sum(parts.values()), 1)
    return parts
