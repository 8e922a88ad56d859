"""Speculative end of turn: at the first silence after speech the LLM starts on what was said;
the answer is held back until the endpoint confirms it, and dropped if the user goes on."""

import json

from services import messages as m

QUESTION = "What is the capital of France"


async def test_the_answer_starts_at_the_first_silence_and_plays_only_after_the_endpoint(timeline):
    tl = timeline
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    await tl.event(m.SpeechStarted("s1", 0))
    assert tl.session.turn == 1
    # 32 ms of silence after the last word: the ASR's tentative transcript.
    await tl.event(m.Transcript("s1", 1, QUESTION, False, 0.0, tentative=True))
    [speculative] = llm.pending()
    assert speculative.text == QUESTION and speculative.turn == 2
    assert tl.session.state == "listening"  # the user may still go on
    # The whole pipeline runs ahead; its frames arrive and wait, unplayed.
    tl.answer(2, ["Paris."])
    await tl.run_until(0.2)
    assert not [u for _, u in tl.played if not u.idle]
    assert tl.session.media.queued() > 0

    # The endpoint (280 ms of silence) confirms the same words: commit, no second request.
    t_commit = tl.clock.now()
    await tl.event(m.Transcript("s1", 2, QUESTION, True, 0.0))
    assert llm.pending() == []
    assert tl.session.state == "thinking"
    await tl.run_until(t_commit + 0.2)
    first = next(t for t, u in tl.played if not u.idle)
    assert first - t_commit <= 0.04 + 1e-9  # the held frames play at the very next frame
    await tl.run_until(2.0)
    assert [e.user for e in tl.session.conversation.exchanges] == [QUESTION]
    assert tl.gateway.metrics.speculations.labels("committed")._value.get() == 1
    # The page's line is the utterance's turn; the event says which turn answers it.
    [line] = [e for e in tl.page_events("transcript") if e["role"] == "user" and e["final"]]
    assert (line["turn"], line["answer_turn"]) == (1, 2)
    assert {e["turn"] for e in tl.page_events("transcript") if e["role"] == "avatar"} == {2}


async def test_speaking_on_drops_the_speculative_answer_and_asks_the_whole_utterance(timeline):
    tl = timeline
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    await tl.event(m.SpeechStarted("s1", 0))
    await tl.event(m.Transcript("s1", 1, "What is", False, 0.0, tentative=True))
    [early] = llm.pending()
    tl.answer(early.turn, ["Something."])
    await tl.run_until(0.2)
    tl.control.pending()
    await tl.event(m.SpeechResumed("s1", early.turn))
    [cancel] = [c for c in tl.control.pending() if isinstance(c, m.Interrupt)]
    assert cancel.turn > early.turn and not cancel.barge_in
    await tl.event(m.Transcript("s1", cancel.turn, QUESTION, True, 0.0))
    [question] = llm.pending()
    assert question.text == QUESTION and question.turn == cancel.turn
    await tl.run_until(1.5)
    # Nothing of the dropped answer was ever played.
    assert all(u.turn != early.turn for _, u in tl.played if not u.idle)
    shown = [e for e in tl.page_events("transcript") if e["role"] == "user"]
    assert {e["turn"] for e in shown} == {1}  # one line for the one utterance
    assert [e["answer_turn"] for e in shown if e["final"]] == [question.turn]


async def test_a_different_final_text_replaces_the_speculation(timeline):
    tl = timeline
    llm = tl.transport.pull(tl.transport.endpoints.llm_in)
    await tl.event(m.SpeechStarted("s1", 0))
    await tl.event(m.Transcript("s1", 1, "What is the capital of friends", False, 0.0, tentative=True))
    [early] = llm.pending()
    await tl.event(m.Transcript("s1", early.turn, QUESTION, True, 0.0))
    [question] = llm.pending()
    assert question.text == QUESTION and question.turn > early.turn
    assert json.loads(question.history) == []
    assert tl.session.media.hold_turn is None
