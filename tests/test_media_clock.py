"""The session media clock on a virtual clock: pacing, 640 samples per frame, idle when starved,
monotonic timestamps, flush on interrupt, skip-ahead when a track falls behind."""

import asyncio

import numpy as np

from services.gateway.idle_frames import IdleFrames
from services.gateway.media_clock import OutputUnit, SessionMedia
from services.gateway.tracks import AvatarAudioTrack, AvatarVideoTrack
from tests.fakes import VirtualClock


def _unit(i: int, turn: int = 1, text: str = "", final: bool = False) -> OutputUnit:
    audio = np.full(640, i + 1, dtype=np.int16)
    return OutputUnit(i, audio, np.full((4, 4, 3), i, np.uint8), turn, text, final, idle=False)


def _media(clock, played=None, max_queued=5):
    return SessionMedia(max_queued, clock, played.append if played is not None else None)


async def test_units_play_in_order_and_idle_when_starved():
    clock = VirtualClock()
    played: list[OutputUnit] = []
    media = _media(clock, played)
    for i in range(3):
        await media.put(_unit(i, text="Hi." if i == 0 else ""))
    units = [media.unit(i) for i in range(5)]
    assert [u.idle for u in units] == [False, False, False, True, True]
    assert all(len(u.audio) == 640 for u in units)
    assert not units[3].audio.any()  # silence under idle frames
    assert played[0].text == "Hi." and len(played) == 5
    assert media.counters.idle_units == 2


async def test_audio_and_video_take_from_the_same_unit():
    clock = VirtualClock()
    media = _media(clock)
    await media.put(_unit(0))
    video = media.unit(0)
    again = media.unit(0)  # the audio track asking for the same unit finds it cached
    assert video is again
    assert media.queued() == 0


async def test_queue_is_bounded_so_producers_wait():
    clock = VirtualClock()
    media = _media(clock, max_queued=2)
    await media.put(_unit(0))
    await media.put(_unit(1))
    blocked = asyncio.create_task(media.put(_unit(2)))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    media.unit(0)  # playing one frees a slot
    await asyncio.wait_for(blocked, 1)


async def test_pace_waits_for_deadlines_from_one_anchor():
    clock = VirtualClock()
    media = _media(clock)
    media.anchor()
    task = asyncio.create_task(media.pace(3, 0.04))
    await clock.advance(0.10)
    assert not task.done()
    await clock.advance(0.03)
    assert await asyncio.wait_for(task, 1) == 3


async def test_a_track_far_behind_skips_ahead_and_never_goes_back():
    clock = VirtualClock()
    media = _media(clock)
    media.anchor()
    await clock.advance(2.0)  # the encoder stalled for 2 s
    index = await media.pace(1, 0.04)
    assert index == 50  # "now" is frame 50: stale media is skipped, not replayed
    nxt = asyncio.create_task(media.pace(index + 1, 0.04))
    await clock.advance(0.05)
    assert await asyncio.wait_for(nxt, 1) == index + 1


async def test_flush_drops_queued_units_and_silences_cached_ones():
    clock = VirtualClock()
    media = _media(clock)
    for i in range(4):
        await media.put(_unit(i, turn=1))
    current = media.unit(0)
    assert not current.idle
    dropped = media.flush(keep_turn=2)
    assert dropped == 3
    assert media.unit(0).idle and not media.unit(0).audio.any()
    assert media.unit(1).idle
    assert media.counters.dropped_units == 3


async def test_tracks_produce_monotonic_timestamps_and_exact_audio():
    clock = VirtualClock()
    media = _media(clock)
    for i in range(3):
        await media.put(_unit(i))
    idle = IdleFrames(lambda i: np.full((4, 4, 3), 255, np.uint8), now=clock.now)
    video, audio = AvatarVideoTrack(media, idle), AvatarAudioTrack(media)

    async def grab(track, n):
        out = []
        for _ in range(n):
            out.append(await track.recv())
        return out

    vtask = asyncio.create_task(grab(video, 5))
    atask = asyncio.create_task(grab(audio, 10))
    for _ in range(30):
        await clock.advance(0.02)
    vframes, aframes = await vtask, await atask
    vpts = [f.pts for f in vframes]
    apts = [f.pts for f in aframes]
    assert vpts == [i * 3600 for i in range(5)]
    assert apts == [i * 960 for i in range(10)]
    assert all(f.samples == 960 and f.sample_rate == 48000 for f in aframes)
    # Voice under frames 0-2 (values 1..3), then silence under idle frames 3-4.
    levels = [int(np.abs(f.to_ndarray()).max()) for f in aframes]
    assert max(levels[1:6]) > 0
    assert levels[-1] == 0
    assert vframes[0].width == 4 and vframes[3].to_ndarray(format="rgb24").min() == 255  # idle image
