"""Drive client/ in headless Chromium with a fake microphone and measure what the page gets.

Shared by the browser end-to-end tests and the end-to-end benchmarks. Two samplers run in the
page once the call is up:

- the avatar's voice as it is played: a WebAudio analyser on the received stream, RMS every
  10 ms. (inbound-rtp ``totalAudioEnergy`` was used first, but Chromium's audio level is
  peak-held and smoothed, so it rose ~130 ms late and fell ~400 ms late.)
- every 40 ms: ``window.avatarClient.getInboundStats()`` (frames, fps) and the mouth region of
  the received video drawn to a 16x8 canvas.
- sample-exact level taps (an AudioWorklet) on the avatar's received voice and on the
  microphone, every 10 ms block stamped with its audio frame, with the context's clock pairs:
  what ``bench.heard`` turns into the latency a listener hears (issue 24);
- the same voice on the ``<audio>`` element's own path: the receiver's per-packet delivery
  record and Chrome's playout delay and playout clock (``bench.element_path``).

So latency, fps and mouth motion are all measured where the person is: in the browser.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SAMPLE_PERIOD_MS = 40

# Records when the fake microphone starts: Chromium plays the file from getUserMedia on.
_INIT_JS = """
(() => {
  const md = navigator.mediaDevices;
  const orig = md.getUserMedia.bind(md);
  md.getUserMedia = async (c) => {
    const s = await orig(c);
    window.__gumAt = performance.now();
    window.__micStream = s;
    return s;
  };
  // When each server event reaches the page (e.g. "interrupted"), to split latencies.
  window.__wsEvents = [];
  const OrigWS = window.WebSocket;
  window.WebSocket = function (...args) {
    const ws = new OrigWS(...args);
    ws.addEventListener('message', (e) => {
      try {
        const m = JSON.parse(e.data);
        window.__wsEvents.push({ t: performance.now(), type: m.type, state: m.state, turn: m.turn,
                                 role: m.role, text: m.text, final: m.final, stages: m.stages,
                                 speech_end_unix_ms: m.speech_end_unix_ms });
      } catch (err) { /* not JSON: the page reports it */ }
    });
    return ws;
  };
  window.WebSocket.prototype = OrigWS.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  // The page's peer connection, for stats the page itself does not expose.
  const OrigPC = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new OrigPC(...args);
    window.__pc = pc;
    return pc;
  };
  window.RTCPeerConnection.prototype = OrigPC.prototype;
  window.__samples = [];
  window.__startSampler = (box, element) => {
    const video = document.getElementById('avatar');
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const GW = 16, GH = 8;
    setInterval(async () => {
      const s = await window.avatarClient.getInboundStats();
      let mouth = null;
      if (video.videoWidth > 0) {
        const W = video.videoWidth, H = video.videoHeight;
        canvas.width = GW; canvas.height = GH;
        ctx.drawImage(video, box[0] * W, box[1] * H, box[2] * W, box[3] * H, 0, 0, GW, GH);
        const d = ctx.getImageData(0, 0, GW, GH).data;
        mouth = [];
        for (let i = 0; i < d.length; i += 4) mouth.push((d[i] + d[i + 1] + d[i + 2]) / 3);
      }
      window.__samples.push({ t: performance.now(), energy: s.audioEnergy, bytes: s.audioBytes,
                              frames: s.videoFrames, fps: s.fps, w: video.videoWidth, mouth });
    }, %d);
    const audioCtx = new AudioContext();
    const analyser = audioCtx.createAnalyser();
    analyser.fftSize = 512;
    audioCtx.createMediaStreamSource(document.getElementById('avatar-audio').srcObject).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    window.__audio = [];
    setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const x of buf) sum += x * x;
      window.__audio.push([performance.now(), sum / buf.length]);
    }, 10);
    return window.__startTaps(element);
  };
  // Sample-exact level taps (issue 24): an AudioWorklet sums every 10 ms block of the avatar's
  // played voice and of the microphone, stamped with its audio frame. The frame becomes page
  // time through the context's own clock pairs (see _TAP_NOTE in Python), not through when a
  // timer happened to run.
  window.__taps = { answer: [], mic: [] };
  window.__tapClock = [];
  window.__startTaps = async (element) => {
    const ctx = new AudioContext();
    const src = `class LevelTap extends AudioWorkletProcessor {
      constructor() { super(); this.n = Math.round(sampleRate / 100); this.sum = 0; this.k = 0;
                      this.start = 0; this.out = []; }
      process(inputs) {
        const chans = inputs[0] || [];
        const frames = chans.length ? chans[0].length : 128;
        for (let i = 0; i < frames; i++) {
          if (this.k === 0) this.start = currentFrame + i;
          let sq = 0;
          for (const c of chans) sq += c[i] * c[i];
          this.sum += chans.length ? sq / chans.length : 0;
          if (++this.k === this.n) { this.out.push(this.start, this.sum / this.n); this.sum = 0; this.k = 0; }
        }
        if (this.out.length >= 20) { this.port.postMessage(this.out); this.out = []; }
        return true;
      }
    }
    registerProcessor('level-tap', LevelTap);`;
    await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([src], { type: 'application/javascript' })));
    const mute = ctx.createGain();
    mute.gain.value = 0;
    mute.connect(ctx.destination);
    const tap = (stream, name) => {
      const node = new AudioWorkletNode(ctx, 'level-tap', { numberOfOutputs: 1, outputChannelCount: [1] });
      node.port.onmessage = (e) => {
        const a = e.data;
        for (let i = 0; i < a.length; i += 2) window.__taps[name].push([a[i], a[i + 1]]);
      };
      ctx.createMediaStreamSource(stream).connect(node);
      node.connect(mute);
    };
    tap(document.getElementById('avatar-audio').srcObject, 'answer');
    if (window.__micStream) tap(window.__micStream, 'mic');
    window.__tapCtx = ctx;
    setInterval(() => {
      const ts = ctx.getOutputTimestamp();
      window.__tapClock.push([ts.contextTime, ts.performanceTime, performance.now(), ctx.currentTime]);
    }, 50);
    if (element) window.__startElementRecord();
    return true;
  };
  // The same voice on the <audio> element's own path, which is what a listener hears (the
  // WebAudio copy above plays later; bench.element_path): when the receiver delivered each RTP
  // packet for playout and its audio-level header (kept when the packet changes; polled every
  // 5 ms so no 20 ms packet is missed), and every 100 ms Chrome's playout delay of the element
  // and its playout clock (estimatedPlayoutTimestamp: which sender time plays out now).
  window.__element = { sources: [], playout: [] };
  window.__startElementRecord = () => {
    const pc = window.__pc;
    const receiver = pc && pc.getReceivers().find((r) => r.track && r.track.kind === 'audio');
    if (!receiver) return;
    let last = null;
    setInterval(() => {
      for (const s of receiver.getSynchronizationSources()) {
        if (s.rtpTimestamp === last) continue;
        last = s.rtpTimestamp;
        window.__element.sources.push([performance.now(), s.timestamp, s.rtpTimestamp ?? null, s.audioLevel ?? null]);
      }
    }, 5);
    setInterval(async () => {
      const row = { t: performance.now() };
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'audio') row.clock = [r.estimatedPlayoutTimestamp ?? null, r.timestamp];
        if (r.type === 'media-playout') row.playout = [r.totalPlayoutDelay, r.totalSamplesCount];
      });
      window.__element.playout.push(row);
    }, 100);
  };
})();
""" % SAMPLE_PERIOD_MS


def chromium_args(wav: Path) -> list[str]:
    # Playwright gives each launch a fresh, empty profile of its own (no --user-data-dir).
    return [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
    ]


def write_mic_wav(path: Path, speech_16k: np.ndarray, lead_s: float, tail_s: float) -> float:
    """The fake microphone: silence, the speech, silence. Returns the speech's length in s."""
    lead = np.zeros(int(lead_s * 16000), np.int16)
    tail = np.zeros(int(tail_s * 16000), np.int16)
    sf.write(path, np.concatenate([lead, speech_16k.astype(np.int16), tail]), 16000, subtype="PCM_16")
    return len(speech_16k) / 16000


@dataclass
class Conversation:
    """What the page saw of one spoken question and the avatar's answer."""

    speech_end_ms: float
    samples: list[dict]
    transcript: list[dict]
    events: dict = field(default_factory=dict)
    screenshot: str = ""
    # (page time ms, mean square) of the avatar's voice as played, every 10 ms.
    audio: list[tuple[float, float]] = field(default_factory=list)
    # The AudioWorklet taps, raw: see bench.heard for what is made of them.
    taps: dict = field(default_factory=dict)

    def energy_rate(self) -> list[tuple[float, float]]:
        """(page time ms, mean square of the avatar's played audio over the last ~10 ms).

        Speech sits around 1e-3..1e-2; digital silence through Opus below 1e-6; the
        thresholds below (1e-4, about -40 dBFS) sit between.
        """
        return [(t, ms) for t, ms in self.audio]

    def first_audio_after_speech_ms(self, threshold: float = 1e-4) -> float | None:
        for t, rate in self.energy_rate():
            if t > self.speech_end_ms + 150 and rate > threshold:
                return t - self.speech_end_ms
        return None

    def talking_span(self, threshold: float = 1e-4) -> tuple[float, float] | None:
        times = [t for t, r in self.energy_rate() if r > threshold and t > self.speech_end_ms + 150]
        return (times[0], times[-1]) if times else None

    def fps(self) -> float:
        frames = [(s["t"], s["frames"]) for s in self.samples if s["frames"]]
        if len(frames) < 2 or frames[-1][0] == frames[0][0]:
            return 0.0
        return (frames[-1][1] - frames[0][1]) * 1000 / (frames[-1][0] - frames[0][0])

    def mouth_motion(self, start_ms: float, end_ms: float) -> float:
        """Mean absolute change of the mouth region between consecutive samples in a span."""
        crops = [np.array(s["mouth"], float) for s in self.samples
                 if s["mouth"] is not None and start_ms <= s["t"] <= end_ms]
        if len(crops) < 2:
            return 0.0
        return float(np.mean([np.abs(a - b).mean() for a, b in zip(crops, crops[1:])]))

    def user_text(self) -> str:
        return " ".join(e["text"] for e in self.transcript if e.get("role") == "user" and e.get("final"))

    def avatar_text(self) -> str:
        return " ".join(e["text"] for e in self.transcript if e.get("role") == "avatar" and e.get("text"))


@contextlib.contextmanager
def open_call(url: str, mic_wav: Path, mouth_box, *, echo_cancellation: bool = True, query: str = "",
              element_record: bool = False):
    """A headless Chromium page in a connected call, sampling from the start of the call.

    Yields ``(page, gum_at_ms)``: the page time at which the fake microphone began playing
    ``mic_wav``, so a time in the WAV maps to page time as ``gum_at_ms + 1000 * t``. ``query``
    adds the page's own switches (e.g. ``ns=0`` turns the browser's noise suppression off).
    ``url`` may carry a query (the ``?token=...`` URL an avatar off localhost prints); an https
    URL is usually the stack's self-signed certificate, which the test browser accepts.
    ``element_record``: also record the voice on the ``<audio>`` element's path (a 5 ms poll and
    a 100 ms ``getStats``: page CPU that ``bench.bench_idle_cpu`` should not count).
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(mic_wav)
        )
        try:
            # The page's strict CSP forbids eval, which Playwright's wait_for_function uses.
            base, _, url_query = url.partition("?")
            page = browser.new_page(viewport={"width": 1200, "height": 820}, bypass_csp=True,
                                    ignore_https_errors=base.startswith("https:"))
            page.add_init_script(_INIT_JS)
            switches = [q for q in (url_query, "" if echo_cancellation else "ec=0", query) if q]
            page.goto(base.rstrip("/") + "/" + ("?" + "&".join(switches) if switches else ""))
            page.click("#start")
            page.wait_for_function("window.__gumAt !== undefined", timeout=20_000)
            page.wait_for_function(
                "window.avatarClient.connectionState === 'connected'", timeout=30_000
            )
            page.evaluate("([box, element]) => window.__startSampler(box, element)",  # awaits the taps
                          [list(mouth_box), element_record])
            yield page, page.evaluate("window.__gumAt")
            page.click("#hangup")
        finally:
            browser.close()


# The browser's own receive-side figures: jitter buffer delay (network jitter + playout
# buffering), freezes and drops, from the page's peer connection.
_RTP_STATS = """async () => {
  const out = {};
  if (!window.__pc) return out;
  (await window.__pc.getStats()).forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    const n = r.jitterBufferEmittedCount || 0;
    out[r.kind] = {
      jitter_buffer_ms: n ? 1000 * r.jitterBufferDelay / n : null,
      jitter_ms: r.jitter !== undefined ? 1000 * r.jitter : null,
      packets_lost: r.packetsLost, frames_decoded: r.framesDecoded, frames_dropped: r.framesDropped,
      freeze_count: r.freezeCount, total_freezes_s: r.totalFreezesDuration,
    };
  });
  return out;
}"""


_TAPS = """() => {
  const ctx = window.__tapCtx;
  return { answer: window.__taps.answer, mic: window.__taps.mic, clock: window.__tapClock,
           rate: ctx ? ctx.sampleRate : null, base_latency_s: ctx ? ctx.baseLatency : null,
           output_latency_s: ctx ? ctx.outputLatency : null, time_origin_ms: performance.timeOrigin,
           gum_at_ms: window.__gumAt, element: window.__element };
}"""


# The candidate pair the call's media took: {"local": {...}, "remote": {...}} (type, address,
# port; for a relay, the TURN URL), or null before ICE has chosen one.
_SELECTED_PAIR = """async () => {
  if (!window.__pc) return null;
  const stats = await window.__pc.getStats();
  const byId = new Map();
  stats.forEach((s) => byId.set(s.id, s));
  let pair = null;
  stats.forEach((s) => {
    if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
    const p = byId.get(s.selectedCandidatePairId);
    const pick = (c) => c && { candidateType: c.candidateType, address: c.address, port: c.port,
                               protocol: c.protocol, url: c.url || '' };
    if (p) pair = { local: pick(byId.get(p.localCandidateId)), remote: pick(byId.get(p.remoteCandidateId)) };
  });
  return pair;
}"""


def _collect(page, speech_end_ms: float, screenshot: Path | None = None) -> Conversation:
    samples = page.evaluate("window.__samples")
    transcript = page.evaluate("JSON.parse(JSON.stringify(window.avatarClient.transcript))")
    stats = page.evaluate("JSON.parse(JSON.stringify(window.avatarClient.stats))")
    ws_events = page.evaluate("window.__wsEvents")
    rtp = page.evaluate(_RTP_STATS)
    pair = page.evaluate(_SELECTED_PAIR)
    audio = [tuple(x) for x in page.evaluate("window.__audio")]
    taps = page.evaluate(_TAPS)
    return Conversation(
        speech_end_ms, samples, transcript, {"stats": stats, "ws": ws_events, "rtp": rtp, "pair": pair},
        str(screenshot or ""),
        audio,
        taps,
    )


def converse(
    url: str,
    mic_wav: Path,
    speech_end_s: float,
    mouth_box: tuple[float, float, float, float],
    *,
    echo_cancellation: bool = True,
    screenshot: Path | None = None,
    answer_timeout_s: float = 150,
    query: str = "",
) -> Conversation:
    """Open the page, press Start, let the fake mic speak, wait for the whole spoken answer."""
    with open_call(url, mic_wav, mouth_box, echo_cancellation=echo_cancellation, query=query,
                   element_record=True) as (page, gum_at):
        speech_end_ms = gum_at + speech_end_s * 1000
        # Mid-sentence screenshot: shortly after the avatar's first words appear.
        page.wait_for_selector('#transcript .entry[data-role="avatar"]', timeout=answer_timeout_s * 1000)
        if screenshot is not None:
            page.wait_for_timeout(600)
            page.screenshot(path=str(screenshot))
        page.wait_for_selector(
            '#transcript .entry[data-role="avatar"][data-final="true"]',
            timeout=answer_timeout_s * 1000,
        )
        page.wait_for_timeout(800)
        return _collect(page, speech_end_ms, screenshot)


# True once the avatar has answered in two different turns and the later answer is finished.
_SECOND_ANSWER_DONE = """() => {
  const a = window.avatarClient.transcript.filter(e => e.role === 'avatar' && e.text);
  const turns = [...new Set(a.map(e => e.turn))];
  if (turns.length < 2) return false;
  const last = Math.max(...turns);
  return window.avatarClient.transcript.some(e => e.role === 'avatar' && e.turn === last && e.final);
}"""


def converse_with_barge_in(
    url: str,
    mic_wav: Path,
    question_end_s: float,
    barge_in_onset_s: float,
    mouth_box: tuple[float, float, float, float],
    *,
    echo_cancellation: bool = True,
    screenshot: Path | None = None,
    timeout_s: float = 150,
) -> Conversation:
    """A question, then the user talking over the answer at ``barge_in_onset_s`` into the WAV;
    waits until the avatar has finished answering the second utterance."""
    with open_call(url, mic_wav, mouth_box, echo_cancellation=echo_cancellation) as (page, gum_at):
        page.wait_for_function(_SECOND_ANSWER_DONE, timeout=timeout_s * 1000)
        if screenshot is not None:
            page.screenshot(path=str(screenshot))
        page.wait_for_timeout(500)
        conv = _collect(page, gum_at + question_end_s * 1000, screenshot)
        conv.events["barge_in_onset_ms"] = gum_at + barge_in_onset_s * 1000
        return conv


def silence_after(conv: Conversation, at_ms: float, min_silence_ms: float = 800,
                  threshold: float = 1e-4) -> float | None:
    """Page time at which the avatar's audio fell silent after ``at_ms`` and stayed silent for
    at least ``min_silence_ms`` (longer than any pause inside its speech); None if it never did.

    The level is sampled every 10 ms over the last ~10 ms of audio, so the figure is good to
    about 10 ms.
    """
    rates = [(t, r) for t, r in conv.energy_rate() if t >= at_ms]
    run_start = None
    for t, rate in rates:
        if rate <= threshold:
            if run_start is None:
                run_start = t
            if t - run_start >= min_silence_ms:
                return max(run_start, at_ms)
        else:
            run_start = None
    return None


def summary(conv: Conversation) -> dict:
    span = conv.talking_span()
    return {
        "first_audio_ms": conv.first_audio_after_speech_ms(),
        "fps": round(conv.fps(), 1),
        "user_text": conv.user_text(),
        "avatar_text": conv.avatar_text(),
        "talking_span_ms": (span[1] - span[0]) if span else 0,
        "stage_stats": conv.events.get("stats"),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
