"""The page holds the avatar's picture back to its voice (client.js ``alignVideo``), in Chromium.

The voice waits longer in its jitter buffer than the picture in its own, so without a hold the
mouth moves before its sound (bench/av_sync.py measures by how much). The page sets the video
receiver's ``jitterBufferTarget``: from the jitter buffers' gap until the receiver's playout
clocks exist, then from those clocks. Here: the hold is set on the real receiver, the receiver
honours it, and the playout clocks end up close together.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.browser import open_call, write_mic_wav
from tests.speech import mouth_box_of_default_avatar

pytestmark = [pytest.mark.browser, pytest.mark.slow]

_READ = """async () => {
  const pc = window.avatarClient.pc;
  const receiver = pc.getReceivers().find((r) => r.track && r.track.kind === 'video');
  const out = { target: receiver.jitterBufferTarget, hold: window.avatarClient.stats.videoHoldMs ?? null,
                by: window.avatarClient.stats.videoAlignedBy ?? null, lead: window.avatarClient.stats.videoLeadMs ?? null };
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') out.video = [s.jitterBufferDelay, s.jitterBufferEmittedCount];
  });
  return out;
}"""


def test_the_page_holds_the_picture_back_to_the_voice(avatar, tmp_path):
    wav = tmp_path / "silence.wav"
    write_mic_wav(wav, np.zeros(0, np.int16), 1.0, 60.0)
    with open_call(avatar.url, wav, mouth_box_of_default_avatar()) as (page, _):
        samples, modes = [], set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            page.wait_for_timeout(500)
            row = page.evaluate(_READ)
            samples.append(row)
            modes.add(row["by"])
            if "playout-clocks" in modes and len(samples) >= 12:
                break
    held = [s for s in samples if s["hold"]]
    assert held, f"the page never set a hold: {samples[-1]}"
    # What the page says it set is what the receiver has.
    assert held[-1]["target"] == pytest.approx(held[-1]["hold"]), held[-1]
    # The hold is on from the jitter buffers before the clocks exist, then from the clocks.
    assert "jitter-buffers" in modes or samples[0]["by"] == "playout-clocks", modes
    assert "playout-clocks" in modes, f"the receiver's playout clocks never came: {modes}"
    # The receiver honours it: the picture waits in its buffer about as long as it was told
    # (half at least: loose, a busy machine drops and late frames shorten the wait).
    first, last = samples[-6]["video"], samples[-1]["video"]
    recent_wait_ms = 1000 * (last[0] - first[0]) / max(1, last[1] - first[1])
    assert recent_wait_ms >= 0.5 * samples[-6]["hold"], (recent_wait_ms, samples[-6:])
    # And the two playout clocks end up close together (the benchmark measures how close).
    leads = [abs(s["lead"]) for s in samples[-4:] if s["by"] == "playout-clocks"]
    assert leads and float(np.median(leads)) < 60, samples[-6:]
