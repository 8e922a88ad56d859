"""A question is never lost with the endpoint's final transcript.

The ASR sends a tentative transcript at the first pause (the gateway starts a speculative answer
and holds it) and the final at the endpoint, ~220 ms of audio later. When that final never comes
(the ASR restarted or died in between, or the call's audio stopped mid-utterance), the held
answer used to stay unplayed for good, and a question carried into that utterance was dropped.
Now the latest tentative stands in for the final, once: after ``FINAL_WAIT_S``, at once when the
ASR reports its restart, or when the next onset shows the utterance is over. And the ASR itself
closes an utterance with a final when the microphone stops arriving.
"""

import asyncio

import numpy as np

from services import messages as m
from services.asr.endpointer import VAD_WINDOW_SAMPLES
from services.asr.service import AsrService
from services.asr.settings import AsrSettings
from services.asr.utterance import Final, Onset, UtteranceTracker
from services.media import SAMPLE_RATE
from tests.fakes import RecordingSender
from tests.gateway_timeline import settle

QUESTION = "What is the capital of France"


def _interrupts(tl) -> list[m.Interrupt]:  # noqa: ANN001
    return [c for c in tl.control.pending() if isinstance(c, m.Interrupt)]


async def _held_speculation(tl, llm) -> m.UserText:  # noqa: ANN001
    await tl.event(m.SpeechStarted("s1", 0))
    await tl.event(m.Transcript("s1", 1, QUESTION, False, 0.0, tentative=True))
    [early] = llm.pending()
    tl.answer(early.turn, ["Paris."])
    await tl.run_until(0.2)
    assert not [u for _, u in tl.played if not u.idle]  # held: the final has not confirmed it
    return early


async def test_a_tentative_whose_final_never_comes_is_answered_once(timeline):
    tl = timeline
    tl.gateway.turns.final_wait_s = 0.2
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    early = await _held_speculation(tl, llm)
    await asyncio.sleep(0.1)
    await settle()
    assert tl.session.state == "listening"  # not yet: the final may still come
    await asyncio.sleep(0.2)
    await settle()
    # The tentative stood in for the final: the held answer is committed, not asked again.
    assert tl.session.state == "thinking" and tl.session.media.hold_turn is None
    assert llm.pending() == []
    await tl.run_until(1.0)
    assert {u.turn for _, u in tl.played if not u.idle} == {early.turn}
    assert [e.user for e in tl.session.conversation.exchanges] == [QUESTION]
    assert tl.gateway.metrics.lost_finals._value.get() == 1
    [line] = [e for e in tl.page_events("transcript") if e["role"] == "user" and e["final"]]
    assert (line["text"], line["answer_turn"]) == (QUESTION, early.turn)
    # The final turning up late changes nothing: no second question, no cut-off.
    tl.control.pending()
    await tl.event(m.Transcript("s1", early.turn, QUESTION, True, 0.0))
    assert llm.pending() == [] and _interrupts(tl) == []
    assert tl.session.turn == early.turn


async def test_the_asr_restarting_after_a_tentative_releases_the_held_answer_at_once(timeline):
    tl = timeline
    assert tl.gateway.turns.final_wait_s >= 1.0  # the restart, not the deadline, releases it
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    early = await _held_speculation(tl, llm)
    await tl.event(m.ServiceRestarted("", 0, "asr", -9))
    assert tl.session.state == "thinking" and tl.session.media.hold_turn is None
    assert llm.pending() == []
    await tl.run_until(1.0)
    assert {u.turn for _, u in tl.played if not u.idle} == {early.turn}


async def test_a_restart_of_another_stage_does_not_end_the_utterance(timeline):
    tl = timeline
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    await _held_speculation(tl, llm)
    await tl.event(m.ServiceRestarted("", 0, "tts", -9))
    assert tl.session.state == "listening" and tl.session.media.hold_turn is not None


async def test_speaking_again_after_a_lost_final_carries_the_question_on(timeline):
    tl = timeline
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    await _held_speculation(tl, llm)
    # The ASR restarted without a word to the gateway (or its final was lost): the next onset.
    await tl.event(m.SpeechStarted("s1", tl.session.turn))
    assert tl.session.state == "listening" and tl.session.media.hold_turn is None
    await tl.event(m.Transcript("s1", tl.session.turn, "and of Spain", True, 0.0))
    asked = [q for q in llm.pending() if q.turn == tl.session.turn]
    assert [q.text for q in asked] == [f"{QUESTION} and of Spain"]


async def test_a_waiting_question_survives_an_asr_restart_mid_utterance(timeline):
    """The LLM is slow to answer; the user goes on speaking (the waiting question is carried
    into the new utterance) and the ASR dies before that utterance's final: the question asked
    before is asked again, with what was heard of the new utterance."""
    tl = timeline
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    await tl.event(m.SpeechStarted("s1", 0))
    await tl.event(m.Transcript("s1", 1, QUESTION, True, 0.0))
    [first] = llm.pending()
    await tl.event(m.SpeechStarted("s1", tl.session.turn))  # before the answer is audible
    assert tl.session.carry == QUESTION
    await tl.event(m.Transcript("s1", tl.session.turn, "and of", False))  # a partial
    await tl.event(m.ServiceRestarted("", 0, "asr", -9))
    [again] = llm.pending()
    assert again.text == f"{QUESTION} and of" and again.turn == tl.session.turn > first.turn


async def test_a_final_late_because_the_user_went_on_is_still_asked(timeline):
    """The ASR ran more than the deadline behind: the tentative stood in, but the user had gone
    on speaking. The late SpeechResumed reopens the utterance, and its real final is asked."""
    tl = timeline
    tl.gateway.turns.final_wait_s = 0.1
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    early = await _held_speculation(tl, llm)
    await asyncio.sleep(0.2)
    await settle()
    assert tl.session.state == "thinking"  # stood in
    await tl.event(m.SpeechResumed("s1", early.turn))
    assert tl.session.media.hold_turn is None and tl.session.turn > early.turn
    whole = f"{QUESTION} and of Spain"
    await tl.event(m.Transcript("s1", tl.session.turn, whole, True, 0.0))
    asked = [q for q in llm.pending() if q.turn == tl.session.turn]
    assert [q.text for q in asked] == [whole]  # asked once, not with the stood-in words twice
    await tl.run_until(1.0)
    assert all(u.turn != early.turn for _, u in tl.played if not u.idle)


# --- the ASR closes an utterance whose audio stops ---------------------------------------------

CHUNK = SAMPLE_RATE // 50  # 20 ms, as the gateway forwards the microphone


class _Stream:
    def __init__(self) -> None:
        self.samples = 0

    def accept(self, pcm: np.ndarray) -> str:
        self.samples += len(pcm)
        return ""

    def finish(self) -> str:
        return f"{self.samples} samples"


class _Engine:
    name = "fake"

    def new_stream(self) -> _Stream:
        return _Stream()


def _loudness_vad(window: np.ndarray) -> float:
    return 1.0 if np.abs(window).mean() > 1000 else 0.0


def test_the_tracker_closes_an_utterance_when_the_audio_ends_mid_word():
    tracker = UtteranceTracker(_Engine(), _loudness_vad, AsrSettings(tentative_silence_ms=0))
    assert tracker.end_of_audio() == []  # nothing said: nothing to close
    events = tracker.process_recording(np.full(SAMPLE_RATE // 2, 8000, np.int16))
    assert [type(e) for e in events] == [Onset]
    [final] = tracker.end_of_audio()
    assert isinstance(final, Final) and int(final.text.split()[0]) >= SAMPLE_RATE // 2 - VAD_WINDOW_SAMPLES
    assert tracker.end_of_audio() == []  # once


async def test_the_asr_service_sends_a_final_when_a_sessions_audio_stops_mid_utterance():
    events = RecordingSender()
    service = AsrService(_Engine(), lambda: _loudness_vad, AsrSettings(tentative_silence_ms=0), events)
    service.audio_gap_s = 0.3
    tone = np.full(SAMPLE_RATE // 2, 8000, np.int16)
    silence = np.zeros(SAMPLE_RATE // 2, np.int16)

    def finals(session: str) -> list[m.Transcript]:
        return [t for t in events.of(m.Transcript) if t.session == session and t.final]

    try:
        # "cut" stops sending mid-word; "quiet" stops after silence; "talking" keeps sending.
        for i in range(0, len(tone), CHUNK):
            for sid, pcm in (("cut", tone), ("quiet", silence), ("talking", tone)):
                await service.handle(m.AudioIn(sid, 1, pcm[i : i + CHUNK]))
        async with asyncio.timeout(5):
            while not finals("cut"):
                await service.handle(m.AudioIn("talking", 1, tone[:CHUNK]))
                await asyncio.sleep(CHUNK / SAMPLE_RATE)
        assert finals("cut")[0].text.endswith("samples")
        assert finals("talking") == []  # its audio goes on: its utterance too
        await asyncio.sleep(0.6)  # now "talking"'s audio has stopped as well
        assert len(finals("cut")) == 1  # one final for the one utterance
        assert len(finals("talking")) == 1 and finals("quiet") == []
        assert [s.session for s in events.of(m.SpeechStarted)].count("cut") == 1
    finally:
        service.on_close("cut")
        service.on_close("quiet")
        service.on_close("talking")
        await service._lanes.aclose()
        service._pool.shutdown(wait=True)
