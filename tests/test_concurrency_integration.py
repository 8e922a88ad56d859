"""Several people at once, on the real thing: main.py's five processes, aiortc clients asking a
spoken question at the same moment (bench/bench_concurrency.py measures the same for numbers).

The bounds are loose on purpose (a noisy 2-core machine must never flake) but not so loose
that head-of-line blocking passes: one session's answer must not wait behind another's.
"""

from __future__ import annotations

import pytest

from bench.bench_concurrency import measure_level

pytestmark = pytest.mark.slow

# End of speech -> first avatar audio, at the client. One question alone takes about 2 s here.
ANSWERED_WITHIN_S = 20.0


def _first_audio_s(level) -> list[float | None]:  # noqa: ANN001
    return [None if r.first_audio_ms is None else r.first_audio_ms / 1000 for r in level.results]


async def test_two_people_asking_at_once_both_hear_an_answer(avatar):
    level = await measure_level(avatar.url, clients=2, timeout_s=ANSWERED_WITHIN_S + 5, whole_answers=False)
    first_audio = _first_audio_s(level)
    assert all(r.heard for r in level.results), level
    assert all(s is not None and s <= ANSWERED_WITHIN_S for s in first_audio), first_audio
    faster, slower = sorted(first_audio)
    # Sharing the machine fairly costs the slower session a fraction of a second; waiting
    # behind the other session (its model time or its playback: head-of-line blocking) costs
    # at least one whole answer's first audio, about 2 s here. 1.5 s is between the two, so
    # this fails on serialised answers; the old `4 * faster + 6` let a session wait 8 s.
    assert slower <= faster + 1.5, first_audio


async def test_a_typing_client_that_never_calls_does_not_block_a_real_one(avatar):
    # The WS-only client's answer has no media clock to play it; it must not hold up the
    # frames of the session that does.
    level = await measure_level(avatar.url, clients=1, ws_only=True, timeout_s=ANSWERED_WITHIN_S + 5,
                                whole_answers=False)
    (first_audio,) = _first_audio_s(level)
    assert level.results[0].heard, level
    assert first_audio is not None and first_audio <= ANSWERED_WITHIN_S, (
        f"the real client got no answer within {ANSWERED_WITHIN_S} s of its end of speech: {first_audio}"
    )
