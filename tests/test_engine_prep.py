"""The gateway's side of an upload's engine step (services/gateway/engine_prep.py): it asks the
lip-sync stage again until it hears, follows the progress, and says what the stage said."""

from __future__ import annotations

import asyncio

import pytest

from services import messages as m
from services.gateway.engine_prep import EnginePreparations, EngineStepFailed
from tests.fakes import RecordingSender


def _event(state: str, progress: float = 0.0, message: str = "") -> m.AvatarPrepared:
    return m.AvatarPrepared("", 0, "0123456789abcdef", "wav2lip", "Wav2Lip's face crops", progress, state, message)


async def test_progress_is_followed_until_ready_and_a_lost_request_is_sent_again():
    control = RecordingSender()
    prep = EnginePreparations(control, resend_s=0.05, answer_s=5.0)
    seen: list[tuple[str, float]] = []
    run = asyncio.create_task(prep.run("0123456789abcdef", lambda step, p: seen.append((step, p))))
    await asyncio.sleep(0.2)  # nobody answers yet (the stage is starting): asked again
    assert len(control.of(m.PrepareAvatar)) >= 3
    for p in (0.0, 0.5):
        prep.on_event(_event("preparing", p))
        await asyncio.sleep(0.01)
    prep.on_event(_event("ready", 1.0))
    assert await asyncio.wait_for(run, 2) is True
    assert seen == [("Wav2Lip's face crops", 0.0), ("Wav2Lip's face crops", 0.5)]


async def test_a_failure_is_said_in_the_stages_words():
    prep = EnginePreparations(RecordingSender(), resend_s=0.05, answer_s=5.0)
    run = asyncio.create_task(prep.run("0123456789abcdef", lambda step, p: None))
    await asyncio.sleep(0.02)
    prep.on_event(_event("failed", message="the wav2lip engine could not prepare this avatar: no face found"))
    with pytest.raises(EngineStepFailed, match="no face found"):
        await asyncio.wait_for(run, 2)


async def test_a_stage_that_never_answers_does_not_fail_the_upload():
    control = RecordingSender()
    prep = EnginePreparations(control, resend_s=0.02, answer_s=0.1)
    assert await asyncio.wait_for(prep.run("0123456789abcdef", lambda step, p: None), 2) is False
    assert len(control.of(m.PrepareAvatar)) >= 3 and not prep._follows
