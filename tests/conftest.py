"""Shared fixtures: one real avatar (main.py) for the whole test session."""

from __future__ import annotations

import pytest

from bench.avatar_process import AvatarProcess


@pytest.fixture(scope="session")
def avatar():
    """The real embedded-default avatar, started once (model loading takes a while)."""
    proc = AvatarProcess()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


SPOKEN_QUESTION = "Hello there. What is your name?"
LEAD_S = 3.0  # silence first, so the call is connected before the words start


@pytest.fixture(scope="session")
def question(tmp_path_factory):
    """The fake microphone's WAV for one spoken question, and when the speech ends in it (s)."""
    from bench.browser import write_mic_wav
    from tests.speech import piper_speech

    path = tmp_path_factory.mktemp("mic") / "question.wav"
    speech_s = write_mic_wav(path, piper_speech(SPOKEN_QUESTION), LEAD_S, tail_s=20.0)
    return path, LEAD_S + speech_s
