"""Drive client/ in headless Chromium with a fake microphone and measure what the page gets.

Shared by the browser end-to-end tests and the end-to-end benchmarks. The page's own
``window.avatarClient.getInboundStats()`` is sampled every 40 ms together with the mouth
region of the received video (drawn to a canvas), so latency, fps and mouth motion are all
measured where the person is: in the browser.
"""

from __future__ import annotations

import json
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
  md.getUserMedia = async (c) => { const s = await orig(c); window.__gumAt = performance.now(); return s; };
  window.__samples = [];
  window.__startSampler = (box) => {
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

    def energy_rate(self) -> list[tuple[float, float]]:
        out = []
        for a, b in zip(self.samples, self.samples[1:]):
            dt = (b["t"] - a["t"]) / 1000
            if dt > 0:
                out.append((b["t"], (b["energy"] - a["energy"]) / dt))
        return out

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


def converse(
    url: str,
    mic_wav: Path,
    speech_end_s: float,
    mouth_box: tuple[float, float, float, float],
    *,
    echo_cancellation: bool = True,
    screenshot: Path | None = None,
    answer_timeout_s: float = 150,
) -> Conversation:
    """Open the page, press Start, let the fake mic speak, wait for the whole spoken answer."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(mic_wav)
        )
        try:
            # The page's strict CSP forbids eval, which Playwright's wait_for_function uses.
            page = browser.new_page(viewport={"width": 1200, "height": 820}, bypass_csp=True)
            page.add_init_script(_INIT_JS)
            page.goto(url + ("/" if echo_cancellation else "/?ec=0"))
            page.click("#start")
            page.wait_for_function("window.__gumAt !== undefined", timeout=20_000)
            page.wait_for_function(
                "window.avatarClient.connectionState === 'connected'", timeout=30_000
            )
            page.evaluate("box => window.__startSampler(box)", list(mouth_box))
            speech_end_ms = page.evaluate("window.__gumAt") + speech_end_s * 1000
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
            samples = page.evaluate("window.__samples")
            transcript = page.evaluate("JSON.parse(JSON.stringify(window.avatarClient.transcript))")
            stats = page.evaluate("JSON.parse(JSON.stringify(window.avatarClient.stats))")
            page.click("#hangup")
        finally:
            browser.close()
    return Conversation(speech_end_ms, samples, transcript, {"stats": stats}, str(screenshot or ""))


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


def dump(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
