"""The lost final, with real processes (bench/service_stack.py: the gateway and the real ASR,
the LLM not started) and a real WebRTC call (aiortc).

1. The ASR is SIGKILLed after its tentative transcript and before its final (the endpoint is
   set to 5 s of silence so that the window is wide and the kill lands in it every time). No
   supervisor runs here, so no restart notice comes either: the gateway's deadline alone must
   turn the tentative into the user's final line and keep the question waiting for the LLM.
2. The call's microphone stops arriving mid-word (the sender's track ends): no silence will ever
   end the utterance, and the ASR must close it with a final itself.

Before the fix neither case ever showed the user's final line, and the question was lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from aiortc.mediastreams import MediaStreamError

from bench.bench_concurrency import speech_48k
from bench.service_stack import ServiceStack
from services.asr.service import AUDIO_GAP_S
from services.gateway.llm_outbox import STARTING
from services.gateway.turn_keeper import FINAL_WAIT_S
from tests.rtc_client import PcmTrack, RtcClient

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
# Slack for a shared 2-core machine on top of each deadline.
SLACK_S = 4.0


def _user_final(e: dict) -> bool:
    return e.get("type") == "transcript" and e.get("role") == "user" and e.get("final") and bool(e.get("text"))


async def _connected(stack: ServiceStack, call: RtcClient) -> None:
    await call.wait_event(lambda e: e.get("type") == "webrtc" and e.get("state") == "connected", 60)
    await asyncio.sleep(0.5)


async def test_the_asr_killed_between_tentative_and_final_loses_no_question():
    clip = speech_48k(QUESTION)
    with ServiceStack({"AVATAR_ENDPOINT_SILENCE_MS": "5000"}) as stack:
        stack.start("gateway", "asr")
        await asyncio.to_thread(stack.wait_ready, "gateway", "asr")
        async with RtcClient(stack.url) as call:
            await _connected(stack, call)
            mark = len(call.events)
            call.mic.play(clip)
            # The tentative comes 64 ms after the last word; the final would come 5 s after it.
            await asyncio.sleep(len(clip) / 48000 + 1.0)
            # The tentative arrived: the gateway queued its speculative question for the absent LLM.
            await call.wait_event(lambda e: e.get("type") == "waiting" and e["message"] == STARTING, 10, start=mark)
            assert not [e for e in call.events[mark:] if _user_final(e)]
            asr = stack.services["asr"].proc
            os.kill(asr.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            line = await call.wait_event(_user_final, FINAL_WAIT_S + SLACK_S, start=mark)
            after_s = time.monotonic() - killed_at
            assert "capital" in line["text"].lower(), line
            assert after_s <= FINAL_WAIT_S + SLACK_S
            # The question still waits for the LLM (not dropped): the notice has not been cleared.
            notices = [e["message"] for e in call.events[mark:] if e.get("type") == "waiting"]
            assert notices and notices[-1] == STARTING, notices
        assert any("final transcript was lost" in line for line in stack.services["gateway"].lines)


class _CutMic(PcmTrack):
    """A microphone that stops (its track ends) when told: no more audio, not even silence."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = False

    async def recv(self):  # noqa: ANN201
        if self.cut:
            raise MediaStreamError
        return await super().recv()


async def test_a_call_whose_audio_stops_mid_word_still_gets_the_final():
    clip = speech_48k(QUESTION)
    with ServiceStack() as stack:
        stack.start("gateway", "asr")
        await asyncio.to_thread(stack.wait_ready, "gateway", "asr")
        call = RtcClient(stack.url)
        call.mic = _CutMic()
        async with call:
            await _connected(stack, call)
            mark = len(call.events)
            call.mic.play(clip)
            await call.wait_event(lambda e: e.get("type") == "speech", 10, start=mark)
            await asyncio.sleep(0.6 * len(clip) / 48000 - 0.3)  # into the question, mid-word
            call.mic.cut = True
            cut_at = time.monotonic()
            line = await call.wait_event(_user_final, AUDIO_GAP_S + SLACK_S, start=mark)
            assert time.monotonic() - cut_at <= AUDIO_GAP_S + SLACK_S
            assert line["text"].strip(), line
        assert any("microphone stopped mid-utterance" in line for line in stack.services["asr"].lines)
