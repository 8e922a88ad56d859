"""Visemes: phoneme timing on the wire, cut with the voice, shaped into mouths that follow it."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from services import messages as m
from services.avatar.animation import FaceAnimator
from services.avatar.visemes import MouthShape, Viseme, merge_marks, viseme_of, viseme_track
from services.lipsync.animation_engine import MOUTH_LOUDNESS, MOUTH_VISEMES, AnimationEngine
from services.lipsync.voice_stream import HOLD_FRAMES, VoiceStream
from services.media import SAMPLES_PER_VIDEO_FRAME as UNIT
from services.phoneme_timing import PhonemeSpan, encode_timing, parse_timing, rescale_lengths


def _voice(n: int) -> np.ndarray:
    t = np.arange(n) / 16000
    return (8000 * np.sin(2 * np.pi * 180 * t)).astype(np.int16)


# "Mama" at 16 kHz as Piper aligns it: stress and length marks have time of their own.
MAMA = [("^", 740), ("m", 740), ("ˈ", 930), ("ɑ", 740), ("ː", 740), ("m", 560), ("ɐ", 560), (".", 1300)]


def test_timing_round_trips_and_refuses_what_does_not_cover_its_audio() -> None:
    text = encode_timing(MAMA)
    n = sum(s for _, s in MAMA)
    spans = parse_timing(text, n)
    assert [s.phoneme for s in spans] == [p for p, _ in MAMA]
    assert spans[0].start == 0 and spans[-1].end == n
    assert all(a.end == b.start for a, b in zip(spans, spans[1:]))
    assert parse_timing(text, n + 5000) is None  # timing of some other chunk
    for bad in ("", "12", "x:m", "-3:m", "5:" + "a" * 20):
        assert parse_timing(bad, 12) is None
    with pytest.raises(ValueError):
        encode_timing([("a\nb", 10)])
    # Resampling 22.05 kHz lengths keeps the running end exact.
    lengths = rescale_lengths([256] * 100, 22050, 16000)
    assert sum(lengths) == round(25600 * 16000 / 22050)


def test_speech_audio_carries_its_phonemes_over_the_wire() -> None:
    msg = m.SpeechAudio("s", 1, 0, "Mama.", _voice(6010), False, encode_timing(MAMA))
    back = m.decode(m.encode(msg))
    assert back.phonemes == msg.phonemes
    # A sender that predates the field (or a TTS without timing) decodes as "no timing".
    assert m.decode(m.encode(m.SpeechAudio("s", 1, 0, "", _voice(10), False))).phonemes == ""


def test_phoneme_classes_and_marks() -> None:
    assert [viseme_of(p) for p in "mbp"] == [Viseme.CLOSED] * 3
    assert viseme_of("ɑ") is Viseme.OPEN and viseme_of("i") is Viseme.SPREAD
    assert {viseme_of(p) for p in "ouw"} == {Viseme.ROUNDED}
    assert {viseme_of(p) for p in "fv"} == {Viseme.LIP_TEETH}
    assert {viseme_of(p) for p in "stdnθ"} == {Viseme.TEETH}
    assert {viseme_of(p) for p in "eʌə"} == {Viseme.MID}
    assert viseme_of("ˈ") is None
    spans = parse_timing(encode_timing(MAMA), sum(s for _, s in MAMA))
    merged = merge_marks(spans)
    assert [s.phoneme for s in merged] == ["^", "m", "ɑ", "m", "ɐ", "."]
    vowel = merged[2]  # the stress mark's time goes to the vowel, the length mark's too
    assert (vowel.start, vowel.end) == (1480, 1480 + 930 + 740 + 740)


def test_the_track_closes_for_m_and_opens_for_a_even_when_short() -> None:
    # "b a b a ..." with 35 ms closures: each frame holding a closure's midpoint is shut.
    spans, t = [], 0
    for i in range(12):
        n = 560 if i % 2 == 0 else 1600
        spans.append(PhonemeSpan("b" if i % 2 == 0 else "a", t, t + n))
        t += n
    pcm = _voice(t)
    frames = -(-t // UNIT)
    track = viseme_track(spans, pcm, frames)
    widest = max(s.open for s in track)
    for span in spans:
        shape = track[int(span.centre) // UNIT]
        if span.phoneme == "b":
            assert shape.open <= 0.15 * widest
        else:
            assert shape.open >= 0.5 * widest
    # Coarticulation: no frame jumps from shut to fully open and back within one frame.
    opens = [s.open for s in track]
    assert max(abs(a - b) for a, b in zip(opens, opens[1:])) < 1.0


def test_rounded_narrows_spread_widens_and_loudness_scales_the_opening() -> None:
    animator = FaceAnimator(skimage.data.astronaut())
    rest_w = animator.mouth_geometry(MouthShape())[1]
    spans = [PhonemeSpan("u", 0, 3200), PhonemeSpan("i", 3200, 6400)]
    track = viseme_track(spans, _voice(6400), 10)
    assert animator.mouth_geometry(track[1])[1] < 0.9 * rest_w
    assert animator.mouth_geometry(track[8])[1] > rest_w
    loud = viseme_track([PhonemeSpan("a", 0, 3200)], _voice(3200), 5)[2].open
    soft = viseme_track([PhonemeSpan("a", 0, 3200)], (_voice(3200) // 30).astype(np.int16), 5)[2].open
    assert soft < 0.85 * loud
    # Frames no timing reaches are left to loudness.
    assert viseme_track([PhonemeSpan("a", 0, 640)], _voice(3200), 5)[4] is None


def test_renders_differ_per_viseme_and_stay_fast() -> None:
    import time

    animator = FaceAnimator(skimage.data.astronaut())
    shapes = {
        "rest": MouthShape(), "a": MouthShape(1.0, 0.1, 0.25), "o": MouthShape(0.6, -0.6, 0.1),
        "i": MouthShape(0.3, 0.55, 0.7), "f": MouthShape(0.1, 0.05, 1.0, 1.0),
    }
    frames = {k: animator.render(s, 0.0).astype(int) for k, s in shapes.items()}
    g = animator.geometry
    y, x, r = int(g.lip_line_y), int(g.mouth_x), int(g.mouth_width)
    mouth = {k: f[y - r // 3 : y + r // 2, x - r : x + r] for k, f in frames.items()}
    for a in shapes:
        for b in shapes:
            if a < b:
                assert np.abs(mouth[a] - mouth[b]).mean() > 0.3, (a, b)
    start = time.perf_counter()
    for i in range(50):
        animator.render(shapes["o"], i * 0.04)
    assert (time.perf_counter() - start) / 50 < 0.05  # loose: 200 frames/s is bench_animation's


def test_stream_cuts_phonemes_with_the_voice_across_chunks() -> None:
    """A sentence in uneven chunks: every piece gets the phonemes under it, in its own time."""
    phonemes = [("m", 700), ("a", 1800), ("b", 600), ("u", 2100), ("p", 500), ("i", 2500)] * 3
    pcm = _voice(sum(n for _, n in phonemes))
    # Split into two TTS chunks at a phoneme boundary, as Piper does per sentence.
    cut = sum(n for _, n in phonemes[:7])
    chunks = [(pcm[:cut], encode_timing(phonemes[:7])), (pcm[cut:], encode_timing(phonemes[7:]))]
    stream = VoiceStream("s")
    clauses = []
    for i, (piece, timing) in enumerate(chunks):
        clauses += stream.feed(1, "Hi." if i == 0 else "", piece, False, timing)
    clauses += stream.feed(1, "", pcm[:0], True)
    truth = parse_timing(encode_timing(phonemes), len(pcm))
    offset = 0
    for clause in clauses:
        assert clause.phonemes is not None
        for span in clause.phonemes:
            original = span.shifted(offset)
            assert any(t.phoneme == original.phoneme and t.start <= original.start and original.end <= t.end
                       for t in truth)
        offset += len(clause.pcm)
    assert offset == len(pcm)
    assert len(clauses) >= 2 and all(len(c.pcm) % UNIT == 0 for c in clauses[:-1])
    # A barge-in (new turn) forgets the old timing.
    stream.feed(2, "", pcm[: UNIT * (HOLD_FRAMES + 2)], False)
    assert stream.spans == []


def test_engine_uses_visemes_with_timing_and_loudness_without() -> None:
    engine = AnimationEngine([skimage.data.astronaut()])
    phonemes = [("m", 1200), ("a", 2000), ("m", 1200), ("a", 2000)]
    pcm = _voice(6400)
    spans = tuple(parse_timing(encode_timing(phonemes), len(pcm)))
    timed = engine.prepare(pcm, 0, phonemes=spans)
    untimed = engine.prepare(pcm, 0)
    assert timed.mouth == MOUTH_VISEMES and untimed.mouth == MOUTH_LOUDNESS
    assert timed.n_frames == untimed.n_frames == 10
    # The steady tone keeps the loudness mouth open throughout; visemes shut it on each "m".
    assert timed.mouths[1].open < 0.1 < min(s.open for s in untimed.mouths[1:])
    assert len(engine.render([(timed, 1), (timed, 4)])) == 2


def test_piper_sends_phoneme_timing_that_tiles_each_chunk() -> None:
    from services.tts.engine import TimedVoice
    from services.tts.piper_engine import PiperEngine
    from services.tts.settings import TtsSettings

    engine = PiperEngine.from_settings(TtsSettings(), noise=False)
    assert engine.timed, "onnx is in the locks: Piper must give phoneme timing"
    chunks = list(engine.synthesize("Mama bought a blue umbrella. Five fish swim."))
    assert len(chunks) == 2 and all(isinstance(c, TimedVoice) for c in chunks)
    for chunk in chunks:
        spans = parse_timing(chunk.phonemes, len(chunk.pcm))
        assert spans is not None and spans[-1].end == len(chunk.pcm)
    first = [s.phoneme for s in merge_marks(parse_timing(chunks[0].phonemes, len(chunks[0].pcm)))]
    assert first[:3] == ["^", "m", "ɑ"] and first.count("b") >= 2


def test_a_frame_shows_the_voice_around_its_own_moment_not_the_next_40_ms() -> None:
    """The renderer's look-ahead: frame k is on screen from k * 40 ms; a sound that starts
    three quarters into unit 0 must not open the mouth of frame 0 (it did: the mouth led)."""
    engine = AnimationEngine([skimage.data.astronaut()])
    pcm = np.concatenate([np.zeros(480, np.int16), _voice(5 * UNIT - 480)])
    loud = engine.prepare(pcm, 0)
    assert loud.mouths[0].open == 0.0 and loud.mouths[2].open > 0.3
    spans = tuple(parse_timing(encode_timing([("_", 480), ("a", 5 * UNIT - 480)]), len(pcm)))
    timed = engine.prepare(pcm, 0, phonemes=spans)
    assert timed.mouths[0].open < 0.25 * timed.mouths[2].open


def test_the_av_probe_finds_a_known_lag() -> None:
    """bench/av_sync.py's fine lag: a mouth that follows the voice 60 ms late reads as +60."""
    from bench.av_sync import best_lag_ms

    rng = np.random.default_rng(3)
    audio_ms = np.arange(0, 8000, 5.0)
    syllables = np.convolve(rng.random(len(audio_ms)) > 0.97, np.hanning(40), mode="same")
    level = syllables**2
    frame_ms = np.arange(0, 8000, 40.0) + 7.0
    for late in (-60.0, 0.0, 60.0):
        motion = np.interp(frame_ms + 20.0 - late, audio_ms, syllables)
        assert best_lag_ms(frame_ms, motion, audio_ms, level) == late


async def test_the_lipsync_stage_says_which_mouth_each_turn_got() -> None:
    """Timed voice -> visemes; the same voice untimed (XTTS, an API voice) -> loudness."""
    import asyncio
    import contextlib

    from services.lipsync.service import LipsyncService
    from tests.fakes import RecordingSender

    out, events = RecordingSender(), RecordingSender()
    svc = LipsyncService(AnimationEngine([skimage.data.astronaut()]), out, events)
    task = asyncio.create_task(svc._schedule())
    svc.on_credit(m.FlowCredit("s", 1, 0, 100, True))
    pcm = _voice(sum(n for _, n in MAMA))
    for turn, timing in ((1, encode_timing(MAMA)), (2, "")):
        await svc.handle(m.SpeechAudio("s", turn, 0, "Mama.", pcm, False, timing))
        await svc.handle(m.SpeechAudio("s", turn, 1, "", pcm[:0], True))
        for _ in range(200):
            if any(f.final and f.turn == turn for f in out.of(m.AvatarFrame)):
                break
            await asyncio.sleep(0.02)
    notes = {n.turn: n.value for n in events.of(m.StageNote) if n.name == "mouth"}
    assert notes == {1: "visemes", 2: "loudness"}
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_closed_lips_cover_the_teeth_the_photo_shows() -> None:
    """The astronaut smiles with her teeth showing; on m/b/p her lips must meet over them."""
    animator = FaceAnimator(skimage.data.astronaut())
    g = animator.geometry
    assert g.teeth_visible and 0 < g.teeth_top_y < g.lip_line_y
    y0, y1 = int(g.teeth_top_y), int(g.lip_line_y)
    x0, x1 = int(g.mouth_x - 0.2 * g.mouth_width), int(g.mouth_x + 0.2 * g.mouth_width)
    rest = animator.render(MouthShape(), 0.0)[y0:y1, x0:x1].astype(float)
    closed = animator.render(MouthShape(seal=1.0), 0.0)[y0:y1, x0:x1].astype(float)
    # Teeth are bright and grey; lips are darker and redder.
    assert closed.mean() < rest.mean() - 15
    assert (closed[..., 0] - closed[..., 2]).mean() > (rest[..., 0] - rest[..., 2]).mean() + 10
    # The viseme track asks for it on "m" and not on "a".
    track = viseme_track([PhonemeSpan("m", 0, 1600), PhonemeSpan("a", 1600, 4800)], _voice(4800), 7)
    assert track[1].seal > 0.8 and track[5].seal < 0.2


def test_a_closed_mouth_shows_no_opening_in_the_frame_on_a_smiling_photo() -> None:
    """Scored on the picture, not the geometry: the astronaut's photo shows parted lips and
    teeth; on m/b/p almost none of that opening may remain visible, on "a" it must widen, and
    half-closed lips (coarticulation) sit in between."""
    from bench.visible_opening import visible_opening

    animator = FaceAnimator(skimage.data.astronaut())
    g = animator.geometry

    def seen(shape: MouthShape) -> float:
        return visible_opening(animator.render(shape, 0.0), g)

    rest, closed, half = seen(MouthShape()), seen(MouthShape(seal=1.0)), seen(MouthShape(seal=0.5))
    wide = seen(MouthShape(open=1.0))
    assert rest >= 4.0  # the photo's own teeth are found...
    assert closed <= 0.15 * wide and closed <= 0.35 * rest  # ...and covered by the lips
    assert closed <= half <= rest
    assert wide > 2.0 * rest
    # Across the middle 60 % of the mouth, where the photo shows its opening the sealed frame
    # is lip coloured: redder and less bright than teeth, column by column (the old seal left
    # the shaded side teeth bare).
    seal = animator._seal
    assert seal is not None
    rest_frame = animator.render(MouthShape(), 0.0).astype(float)
    sealed = animator.render(MouthShape(seal=1.0), 0.0).astype(float)

    def lip_likeness(frame: np.ndarray, x: int, y0: int, y1: int) -> float:
        px = frame[y0:y1, x]
        return float((px[:, 0] - px[:, 2]).mean() - 0.5 * px.mean())

    gains = []
    for c in range(len(seal.top)):
        x = seal.x0 + c
        if abs(x - g.mouth_x) <= 0.3 * g.mouth_width and seal.bottom[c] - seal.top[c] >= 3:
            y0, y1 = int(seal.top[c]) + 1, int(seal.bottom[c]) - 1
            gains.append(lip_likeness(sealed, x, y0, y1) - lip_likeness(rest_frame, x, y0, y1))
    assert len(gains) >= 0.5 * g.mouth_width
    assert np.mean(np.array(gains) > 10) >= 0.85
