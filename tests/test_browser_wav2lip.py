"""End to end in a real browser with the Wav2Lip engine selected by config and a random-weight
checkpoint: proves the whole wav2lip path (checkpoint loading, avatar preparation, batched
inference inside the lip-sync service, frames to the browser) works. The weights are random, so
the mouth is noise; that is expected and is exactly why it must change while the avatar talks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bench.avatar_process import AvatarProcess
from bench.browser import converse, summary
from tests.speech import mouth_box_of_default_avatar
from tests.wav2lip_helpers import save_random_checkpoint

pytestmark = [pytest.mark.browser, pytest.mark.slow]
logger = logging.getLogger(__name__)

OUT = Path(__file__).resolve().parent.parent / "out"


@pytest.fixture(scope="module")
def wav2lip_avatar(tmp_path_factory):
    """The real avatar (main.py, five processes) with only the lip-sync engine swapped."""
    checkpoint = save_random_checkpoint(
        tmp_path_factory.mktemp("w2l") / "wav2lip_gan.pth", seed=11
    )
    # The default cache dir on purpose: it holds the SmolLM2 conversion (15-30 s to redo). The
    # Wav2Lip avatar preparation is cached there too, keyed by source and options, and is
    # covered from scratch by tests/test_wav2lip_avatar.py.
    proc = AvatarProcess("--lipsync-engine", "wav2lip", "--wav2lip-checkpoint", str(checkpoint))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def test_wav2lip_with_random_weights_runs_end_to_end(wav2lip_avatar, question):
    wav, speech_end_s = question
    OUT.mkdir(exist_ok=True)
    conv = converse(
        wav2lip_avatar.url, wav, speech_end_s, mouth_box_of_default_avatar(),
        screenshot=OUT / "browser-wav2lip.png",
    )
    result = summary(conv)
    print(f"\nwav2lip: end of speech -> first avatar audio: {result['first_audio_ms']:.0f} ms; "
          f"video {result['fps']:.1f} fps; heard {result['user_text']!r}; "
          f"answer {result['avatar_text']!r}")
    # The lip-sync service really ran Wav2Lip (not the animation fallback) on our checkpoint.
    # (The gateway builds the animation engine for its idle frames, so only the lip-sync
    # service's own lines count.)
    lipsync_lines = [line for line in wav2lip_avatar.lines if " lipsync " in line]
    assert any("Wav2LipEngine:" in line for line in lipsync_lines), wav2lip_avatar.log_tail()
    assert not any("AnimationEngine" in line for line in lipsync_lines), lipsync_lines
    # The call formed and the page sampled received video throughout.
    assert conv.samples and any(s["w"] > 0 for s in conv.samples)
    # The avatar's voice arrived after the user stopped talking and was more than a click.
    assert result["first_audio_ms"] is not None and result["first_audio_ms"] > 0
    span = conv.talking_span()
    assert span is not None and span[1] - span[0] > 300
    # Batched Wav2Lip on the CPU still keeps the video at a real frame rate.
    assert result["fps"] > 10
    # Random weights draw noise into the mouth region, so it changes from frame to frame while
    # the avatar talks (silent frames skip the model and show the idle loop instead).
    talking = conv.mouth_motion(*span)
    assert talking > 0.5, talking
    assert result["avatar_text"].strip()
