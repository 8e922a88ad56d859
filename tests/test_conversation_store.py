"""The gateway's conversation store: survives a restart, keeps what was heard, stays bounded."""

import json

from services.gateway.conversation import MAX_EXCHANGES, TRIM_BLOCK, ConversationStore, valid_id


def test_a_conversation_survives_a_restart_of_its_store(tmp_path):
    path = str(tmp_path / "conversations.sqlite3")
    store = ConversationStore(path)
    conv = store.open(None)
    assert valid_id(conv.id)
    store.record_user(conv, 1, "What is the capital of France?")
    store.record_answer(conv, 1, "Paris is the capital of France.", interrupted=False)
    store.record_user(conv, 2, "Tell me a long story.")
    store.record_answer(conv, 2, "Once upon a time,", interrupted=True)
    store.record_user(conv, 3, "What did I ask first?")
    store.close()

    again = ConversationStore(path).open(conv.id)
    assert [(e.turn, e.user, e.assistant, e.interrupted) for e in again.exchanges] == [
        (1, "What is the capital of France?", "Paris is the capital of France.", False),
        (2, "Tell me a long story.", "Once upon a time,", True),
        (3, "What did I ask first?", "", False),
    ]
    history = json.loads(again.history_json(before_turn=3))
    assert history == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital of France."},
        {"role": "user", "content": "Tell me a long story."},
        {"role": "assistant", "content": "Once upon a time, ..."},
    ]


def test_unknown_or_malformed_ids_start_a_new_conversation(tmp_path):
    store = ConversationStore(str(tmp_path / "c.sqlite3"))
    for bad in (None, "", "short", "x" * 65, "has spaces in it!!", "A" * 22):
        conv = store.open(bad)
        assert conv.exchanges == [] and conv.id != bad and valid_id(conv.id)


def test_an_answer_is_recorded_once_and_history_is_bounded(tmp_path):
    store = ConversationStore(str(tmp_path / "c.sqlite3"))
    conv = store.open(None)
    store.record_user(conv, 1, "hi")
    store.record_answer(conv, 1, "Hello there.", interrupted=False)
    store.record_answer(conv, 1, "Hello", interrupted=True)  # a late barge-in changes nothing
    assert conv.exchanges[0].assistant == "Hello there." and not conv.exchanges[0].interrupted
    firsts = set()
    for turn in range(2, 3 * MAX_EXCHANGES):
        store.record_user(conv, turn, f"q{turn}")
        assert MAX_EXCHANGES - TRIM_BLOCK <= len(conv.exchanges) <= MAX_EXCHANGES or turn <= MAX_EXCHANGES
        assert [e.turn for e in store.open(conv.id).exchanges] == [e.turn for e in conv.exchanges]
        firsts.add(conv.exchanges[0].turn)
    # Trimmed a block at a time: the first exchange (the start of every prompt, which the
    # LLM's prefix cache needs to stay put) changes once per TRIM_BLOCK turns, not every turn.
    assert len(firsts) <= 2 * MAX_EXCHANGES // TRIM_BLOCK + 1
