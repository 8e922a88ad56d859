"""Barge-in as a scripted timeline on the real Gateway, with fake stages and a virtual clock.

The gateway's media clock runs on a VirtualClock, a fake audio track plays units on it, and a
fake lip-sync stage streams an answer into the frames socket. At a scripted moment the ASR
reports a speech onset; the test checks, frame by frame, that the avatar falls silent at once,
that every stage is told (Interrupt on the control socket, with exactly what was heard), that
stale frames still in flight are dropped, and that the next answer plays. Deterministic: time
only moves when the test moves it.
"""

import json

from services import messages as m
from tests.gateway_timeline import CLAUSES, FRAME_S, FRAMES_PER_CLAUSE, settle


def _no_credits(control: list) -> list:
    return [c for c in control if not isinstance(c, m.FlowCredit)]


async def test_barge_in_silences_the_avatar_at_once_and_the_next_answer_plays(timeline):
    tl = timeline
    # t=0: the user speaks and finishes; the avatar starts answering at t=0.2.
    await tl.event(m.SpeechStarted("s1", 0))
    assert tl.session.turn == 1
    await tl.event(m.Transcript("s1", 1, "tell me a story", True, 0.0))
    await tl.run_until(0.2)
    tl.answer(1, CLAUSES)
    await tl.run_until(1.6)
    assert tl.session.state == "speaking"
    talking = [u for _, u in tl.played if not u.idle]
    assert len(talking) >= 30 and all(u.turn == 1 for u in talking)

    # t=1.6: the user talks over the avatar (the ASR's onset reaches the gateway).
    control_before = _no_credits(tl.control.pending())
    assert [type(c) for c in control_before] == [m.Interrupt]  # from the first turn, no barge-in
    assert control_before[0].barge_in is False
    t_onset = tl.clock.now()
    await tl.event(m.SpeechStarted("s1", 1))
    assert tl.session.turn == 2

    # Every stage hears about it, with exactly what the user heard: the first two clauses
    # (the second started at 1.2 s), not the third that was still queued.
    interrupts = [c for c in tl.control.pending() if isinstance(c, m.Interrupt)]
    assert len(interrupts) == 1
    assert interrupts[0].turn == 2 and interrupts[0].barge_in
    assert interrupts[0].heard_text == " ".join(CLAUSES[:2])
    assert tl.page_events("interrupted")[-1]["heard"] == " ".join(CLAUSES[:2])
    # The queued frames were dropped, and /metrics counts them.
    assert tl.gateway.metrics.frames.labels("dropped")._value.get() >= 1
    assert tl.gateway.metrics.interrupts._value.get() == 1

    # The avatar is silent from the very next frame on, though lip-sync keeps sending turn-1
    # frames for a while (it has not seen the Interrupt yet): those are dropped as stale.
    await tl.run_until(2.6)
    after = [u for t, u in tl.played if t > t_onset + FRAME_S]
    assert after and all(u.idle and not u.audio.any() for u in after)
    assert tl.gateway.metrics.stale_frames._value.get() > 0
    assert tl.session.state == "listening"

    # The user's new question ends; the second answer plays, on the same unbroken clock.
    await tl.event(m.Transcript("s1", 2, "what is your name", True, 0.0))
    tl.answer(2, ["My name is Ava."])
    await tl.run_until(4.0)
    second = [u for _, u in tl.played if not u.idle and u.turn == 2]
    assert len(second) == FRAMES_PER_CLAUSE
    assert all((u.audio == 1002).all() for u in second)
    indices = [u.index for _, u in tl.played]
    assert indices == list(range(len(indices)))  # timestamps never jumped back or reset
    spoken = [e["text"] for e in tl.page_events("transcript") if e["role"] == "avatar" and e["text"]]
    assert spoken == CLAUSES[:2] + ["My name is Ava."]
    assert tl.session.state == "listening"  # the second answer finished


async def test_stop_and_typing_interrupt_the_same_way(timeline):
    tl = timeline
    await tl.event(m.SpeechStarted("s1", 0))
    await tl.event(m.Transcript("s1", 1, "tell me a story", True, 0.0))
    tl.answer(1, CLAUSES)
    await tl.run_until(0.5)
    tl.control.pending()
    t_stop = tl.clock.now()
    await tl.gateway._on_client_message(tl.session, json.dumps({"type": "interrupt"}))
    await settle()
    [stop] = _no_credits(tl.control.pending())
    assert stop.barge_in and stop.turn == 2 and stop.heard_text == CLAUSES[0]
    await tl.run_until(1.0)
    assert all(u.idle for t, u in tl.played if t > t_stop + FRAME_S)

    # Typing while an answer plays interrupts too, and the typed text goes to the LLM.
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    tl.answer(2, CLAUSES)
    await tl.run_until(1.5)
    assert tl.session.state == "speaking"
    await tl.gateway._on_client_message(tl.session, json.dumps({"type": "text", "text": "never mind"}))
    await settle()
    [typed] = [c for c in tl.control.pending() if isinstance(c, m.Interrupt)]
    assert typed.barge_in and typed.turn == 3
    spoken, question = llm.pending()  # the gateway asks the LLM for spoken and typed turns alike
    assert (spoken.text, spoken.source, spoken.turn) == ("tell me a story", "speech", 1)
    assert question.text == "never mind" and question.turn == 3 and question.source == "typed"
    # The history sent with it: what the user said, and only what they heard of each answer.
    assert json.loads(question.history) == [
        {"role": "user", "content": "tell me a story"},
        {"role": "assistant", "content": CLAUSES[0] + " ..."},  # cut off by Stop after clause 1
    ]
    t_typed = tl.clock.now()
    await tl.run_until(2.0)
    assert all(u.idle for t, u in tl.played if t > t_typed + FRAME_S)
