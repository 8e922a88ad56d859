"""One turn for one thought: speaking again before the avatar's voice starts continues the same
turn (one transcript, one answer); speaking while it talks is a barge-in."""

import json

from services import messages as m


async def test_a_pause_before_the_answer_joins_the_two_sentences(timeline):
    tl = timeline
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    await tl.event(m.SpeechStarted("s1", 0))
    await tl.event(m.Transcript("s1", 1, "Hello avatar.", True, 0.0))
    assert tl.session.state == "thinking"
    [first] = llm.pending()
    assert first.text == "Hello avatar." and first.turn == 1

    # 0.35 s later the user goes on; the answer to "Hello avatar." has not started playing.
    tl.control.pending()
    await tl.event(m.SpeechStarted("s1", 1))
    assert tl.session.turn == 2
    [cancel] = [c for c in tl.control.pending() if isinstance(c, m.Interrupt)]
    assert cancel.turn == 2 and not cancel.barge_in  # not a barge-in: nobody heard an answer
    assert tl.page_events("interrupted") == []
    assert any(e.get("merged") and e["turn"] == 1 for e in tl.page_events("transcript"))

    await tl.event(m.Transcript("s1", 2, "What is the weather like today?", True, 0.0))
    [question] = llm.pending()
    assert question.turn == 2
    assert question.text == "Hello avatar. What is the weather like today?"
    assert json.loads(question.history) == []  # one exchange, not two
    shown = [e for e in tl.page_events("transcript") if e["role"] == "user" and e["turn"] == 2 and e["final"]]
    assert shown[-1]["text"] == question.text

    # Once the answer is audible, speaking again is a barge-in as usual.
    tl.answer(2, ["It is sunny."])
    await tl.run_until(0.5)
    assert tl.session.state == "speaking"
    await tl.event(m.SpeechStarted("s1", 2))
    [barge] = [c for c in tl.control.pending() if isinstance(c, m.Interrupt)]
    assert barge.barge_in and barge.turn == 3
    assert tl.gateway.conversations is not None
    assert [e.user for e in tl.session.conversation.exchanges] == ["Hello avatar. What is the weather like today?"]


async def test_a_continuation_that_says_nothing_keeps_the_first_question(timeline):
    tl = timeline
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    await tl.event(m.SpeechStarted("s1", 0))
    await tl.event(m.Transcript("s1", 1, "What time is it?", True, 0.0))
    await tl.event(m.SpeechStarted("s1", 1))  # a cough: the VAD fired, the ASR hears nothing
    await tl.event(m.Transcript("s1", 2, "", True, 0.0))
    first, again = llm.pending()
    assert (first.turn, again.turn) == (1, 2) and again.text == "What time is it?"
