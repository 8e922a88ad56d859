"""End to end in a real browser: headless Chromium opens the page served by ``python main.py``,
speaks a question through a fake microphone, and receives the avatar's voice and face."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bench.browser import converse, summary
from tests.speech import mouth_box_of_default_avatar

pytestmark = [pytest.mark.browser, pytest.mark.slow]
logger = logging.getLogger(__name__)

OUT = Path(__file__).resolve().parent.parent / "out"


def test_spoken_question_gets_a_spoken_lip_synced_answer(avatar, question):
    wav, speech_end_s = question
    OUT.mkdir(exist_ok=True)
    conv = converse(
        avatar.url, wav, speech_end_s, mouth_box_of_default_avatar(),
        screenshot=OUT / "browser-talking.png",
    )
    result = summary(conv)
    print(f"\nend of speech -> first avatar audio in the browser: {result['first_audio_ms']:.0f} ms; "
          f"video {result['fps']:.1f} fps; heard {result['user_text']!r}; answer {result['avatar_text']!r}")
    # The user's words reached the transcript (pocketsphinx is rough: keywords, not sentences).
    heard = result["user_text"].lower()
    assert any(word in heard for word in ("hello", "name", "there")), heard
    # The avatar's voice arrived and was played, after the user stopped talking.
    assert result["first_audio_ms"] is not None and result["first_audio_ms"] > 0
    span = conv.talking_span()
    assert span is not None and span[1] - span[0] > 300
    # Video frames flowed at a real frame rate.
    assert result["fps"] > 10
    # The mouth moved while the avatar talked, much more than while it was idle.
    talking = conv.mouth_motion(*span)
    idle = conv.mouth_motion(conv.samples[0]["t"], conv.speech_end_ms - 500)
    assert talking > 0.5 and talking > 1.5 * idle, (talking, idle)
    assert result["avatar_text"].strip()
