"""Do the lips say the words? Per phoneme class, the rendered mouth at each phoneme's centre.

    python -m bench.bench_visemes [--out bench-results/visemes.json] [--sheet docs/visemes-contact-sheet.png]

Fixed sentences go through the real TTS stage (``TtsService`` + the packaged Piper voice; its
``SpeechAudio`` messages are encoded and decoded as on the wire) and the lip-sync stage's own
path (``VoiceStream`` cuts the voice and its phoneme timing into pieces, ``AnimationEngine``
prepares them), with no browser. For every phoneme (stress and length marks merged) the frame
on screen at its centre is scored from the rendered geometry (``FaceAnimator.mouth_geometry``:
lip opening at the mouth's centre and corner-to-corner width, as ``render`` draws them):

- closed (m b p): opening <= 15 % of the sentence's widest opening;
- open vowels (a ɑ æ): opening >= 50 % of the widest;
- rounded (o ɔ u ʊ w): mouth narrower than at rest.

Closed and open are scored a second time from the rendered *frame* (``bench/visible_opening.py``:
the height of the dark inner mouth and bright teeth between the lips, relative to the
sentence's widest frame), since a photo that shows its teeth at rest can have its lips
"closed" by the geometry and still show its teeth on screen.

Each is scored twice: with phoneme timing (visemes) and with the same voice's timing withheld
(the loudness mode every TTS without timing gets). Faces: the astronaut (scikit-image), the
astronaut mirrored and scaled down, and faces of scikit-image's ``lfw_subset`` (25x25 crops of
Labeled Faces in the Wild) scaled up; the opening is relative to each face's own mouth, so the
faces differ in their pictures (the contact sheet), not much in the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402

from services import messages  # noqa: E402
from bench.visible_opening import visible_opening  # noqa: E402
from services.avatar.animation import FaceAnimator  # noqa: E402
from services.avatar.visemes import MouthShape, Viseme, merge_marks, viseme_of  # noqa: E402
from services.lipsync.animation_engine import AnimationEngine  # noqa: E402
from services.lipsync.voice_stream import VoiceStream  # noqa: E402
from services.media import SAMPLES_PER_VIDEO_FRAME  # noqa: E402
from services.phoneme_timing import PhonemeSpan, parse_timing  # noqa: E402
from bench.result_file import write_json  # noqa: E402

SENTENCES = (
    "Mama bought a blue umbrella, for Bob.",
    "Peter made a map of the harbour, and Amy paid for it.",
    "Five brave wolves moved over the woods.",
    "Please put the big box by the window.",
    "My father wants a pot of hot coffee.",
    "We shall go home soon, Bobby, before the moon is up.",
    "Maybe a bottle of apple juice is better.",
    "A small boat floats by the old bridge.",
)
CLOSED_MAX = 0.15
OPEN_MIN = 0.50
GOALS = {"closed": 0.90, "open": 0.90, "rounded": 0.80}
SHEET = (("m", Viseme.CLOSED), ("a", Viseme.OPEN), ("o", Viseme.ROUNDED), ("f", Viseme.LIP_TEETH), ("i", Viseme.SPREAD))


class _Collect:
    """Stands in for the TTS stage's PUSH socket: keeps the messages, as decoded off the wire."""

    def __init__(self) -> None:
        self.sent: list[messages.SpeechAudio] = []
        self.done = asyncio.Event()

    async def send(self, msg: object) -> None:
        decoded = messages.decode(messages.encode(msg))
        if isinstance(decoded, messages.SpeechAudio):
            self.sent.append(decoded)
            if decoded.final:
                self.done.set()


async def _speak(sentence: str, tts) -> list[messages.SpeechAudio]:  # noqa: ANN001
    from services.tts.service import TtsService

    out, events = _Collect(), _Collect()
    service = TtsService(tts, out, events)
    await service.handle(messages.TextChunk("bench", 1, 0, sentence, True))
    await asyncio.wait_for(out.done.wait(), 60)
    await service.scheduler.aclose()
    return out.sent


def _mouths(chunks: list[messages.SpeechAudio], engine: AnimationEngine, timed: bool):
    """The mouth of every frame, as the lip-sync stage cuts and prepares the voice."""
    stream = VoiceStream("bench")
    mouths: list[MouthShape] = []
    for msg in chunks:
        for clause in stream.feed(msg.turn, msg.text, msg.pcm, msg.final, msg.phonemes if timed else ""):
            job = engine.prepare(clause.pcm, 0, clause.before, clause.after, phonemes=clause.phonemes)
            mouths.extend(job.mouths)
    return mouths


def _phonemes(chunks: list[messages.SpeechAudio]) -> list[PhonemeSpan]:
    """Every phoneme of the sentence on the stream's sample axis, marks merged."""
    spans, offset = [], 0
    for msg in chunks:
        for span in parse_timing(msg.phonemes, len(msg.pcm)) or []:
            spans.append(span.shifted(offset))
        offset += len(msg.pcm)
    return merge_marks(spans)


def frame_at(sample: float) -> int:
    """The frame on screen at ``sample``: frame k shows from k * 640 on and is drawn for the
    voice half a frame either side of that moment (AnimationEngine.prepare)."""
    return int(round(sample / SAMPLES_PER_VIDEO_FRAME))


def _class_of(phoneme: str) -> str | None:
    first = phoneme[:1]
    if first in "mbp":
        return "closed"
    if first in "aɑæ":
        return "open"
    if first in "oɔuʊw":
        return "rounded"
    v = viseme_of(phoneme)
    return None if v in (None, Viseme.REST) else v.value


def _score(spans, mouths, animator: FaceAnimator) -> dict[str, list[float]]:
    """Per class, each phoneme's opening ratio (closed/open) or width ratio to rest (rounded)."""
    geometry = [animator.mouth_geometry(m) for m in mouths]
    widest = max(o for o, _ in geometry) or 1.0
    rest_width = animator.mouth_geometry(MouthShape())[1]
    out: dict[str, list[float]] = defaultdict(list)
    for span in spans:
        cls = _class_of(span.phoneme)
        k = frame_at(span.centre)
        if cls is None or k >= len(geometry):
            continue
        opening, width = geometry[k]
        out[cls].append(width / rest_width if cls == "rounded" else opening / widest)
    return out


def _score_frames(spans, mouths, animator: FaceAnimator) -> dict[str, list[float]]:
    """Per class (closed, open), each phoneme's visible opening in its rendered frame, relative
    to the sentence's widest visible opening."""
    seen = [visible_opening(animator.render(m, k * 0.04), animator.geometry) for k, m in enumerate(mouths)]
    widest = max(seen, default=0.0) or 1.0
    out: dict[str, list[float]] = defaultdict(list)
    for span in spans:
        cls = _class_of(span.phoneme)
        k = frame_at(span.centre)
        if cls in ("closed", "open") and k < len(seen):
            out[cls].append(seen[k] / widest)
    return out


def _passed(cls: str, values: list[float]) -> float | None:
    """Share of phonemes that meet their class's goal (None: a class without a goal)."""
    if cls == "closed":
        hits = [v <= CLOSED_MAX for v in values]
    elif cls == "open":
        hits = [v >= OPEN_MIN for v in values]
    elif cls == "rounded":
        hits = [v < 1.0 for v in values]
    else:
        return None
    return round(sum(hits) / len(hits), 3) if hits else None


def faces() -> dict[str, np.ndarray]:
    astronaut = skimage.data.astronaut()
    out = {"astronaut": astronaut}
    small = cv2.resize(astronaut[:, ::-1], (384, 384), interpolation=cv2.INTER_AREA)
    out["astronaut-mirrored-384"] = np.ascontiguousarray(small)
    lfw = skimage.data.lfw_subset()  # the first 100 are faces
    for i in (7, 21):  # lfw 0 was tried too: its mouth was placed on the upper lip
        face = cv2.resize((lfw[i] * 255).astype(np.uint8), (300, 300), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((420, 420), 200, np.uint8)
        canvas[60:360, 60:360] = face
        out[f"lfw-{i}"] = np.ascontiguousarray(np.repeat(canvas[..., None], 3, axis=2))
    return out


def contact_sheet(examples: dict[str, dict[str, np.ndarray]], path: str) -> None:
    rows = []
    for face, tiles in examples.items():
        row = []
        for label, _ in SHEET:
            tile = tiles.get(label)
            tile = np.zeros((160, 160, 3), np.uint8) if tile is None else cv2.resize(tile, (160, 160))
            tile = tile.copy()
            cv2.putText(tile, f"{label}", (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 0), 2)
            row.append(tile)
        strip = np.hstack(row)
        header = np.full((22, strip.shape[1], 3), 30, np.uint8)
        cv2.putText(header, face, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        rows.append(np.vstack([header, strip]))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cv2.imwrite(path, cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def _example(spans, mouths, animator: FaceAnimator, viseme: Viseme, letter: str) -> np.ndarray | None:
    """The mouth region at the centre of the first phoneme of ``letter`` (else of its class)."""
    for pick in (lambda s: s.phoneme[:1] == letter, lambda s: viseme_of(s.phoneme) is viseme):
        for span in spans:
            k = frame_at(span.centre)
            if pick(span) and k < len(mouths):
                frame = animator.render(mouths[k], k * 0.04)
                g = animator.geometry
                r = int(0.9 * g.mouth_width)
                y0, x0 = int(max(0, g.lip_line_y - 0.8 * r)), int(max(0, g.mouth_x - r))
                return frame[y0 : y0 + 2 * r, x0 : x0 + 2 * r]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results/visemes.json")
    parser.add_argument("--sheet", default="docs/visemes-contact-sheet.png")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    from services.tts.piper_engine import PiperEngine
    from services.tts.settings import TtsSettings

    tts = PiperEngine.from_settings(TtsSettings(), noise=False)
    spoken = [asyncio.run(_speak(s, tts)) for s in SENTENCES]
    result: dict[str, object] = {"sentences": list(SENTENCES), "faces": {}, "goals": GOALS}
    modes = ("visemes", "loudness", "visemes-frame", "loudness-frame")
    totals: dict[str, dict[str, list[float]]] = {mode: defaultdict(list) for mode in modes}
    examples: dict[str, dict[str, np.ndarray]] = {}
    for name, image in faces().items():
        engine = AnimationEngine([image])
        animator = engine.animator(0)
        per_face: dict[str, dict[str, list[float]]] = {mode: defaultdict(list) for mode in modes}
        tiles: dict[str, np.ndarray] = {}
        for chunks in spoken:
            spans = _phonemes(chunks)
            for mode in ("visemes", "loudness"):
                mouths = _mouths(chunks, engine, timed=mode == "visemes")
                for cls, values in _score(spans, mouths, animator).items():
                    per_face[mode][cls].extend(values)
                    totals[mode][cls].extend(values)
                for cls, values in _score_frames(spans, mouths, animator).items():
                    per_face[f"{mode}-frame"][cls].extend(values)
                    totals[f"{mode}-frame"][cls].extend(values)
                if mode == "visemes":
                    for letter, viseme in SHEET:
                        if letter not in tiles:
                            tile = _example(spans, mouths, animator, viseme, letter)
                            if tile is not None:
                                tiles[letter] = tile
        examples[name] = tiles
        result["faces"][name] = {
            "detected": animator.geometry.detected,
            "mouth_width_px": round(animator.geometry.mouth_width, 1),
            **{mode: {cls: _passed(cls, v) for cls, v in sorted(per_face[mode].items()) if cls in GOALS}
               for mode in per_face},
            "frame_median": {mode: {cls: round(statistics.median(v), 3) for cls, v in sorted(per_face[mode].items())}
                             for mode in ("visemes-frame", "loudness-frame")},
        }
    for name, per in result["faces"].items():
        print(f"{name:<24} geometry / frame, visemes: " + ", ".join(
            f"{cls} {per['visemes'].get(cls, 0):.0%} / {per['visemes-frame'].get(cls, 0):.0%}"
            for cls in ("closed", "open"))
            + "; frame median closed {:.2f}, open {:.2f}".format(
                per["frame_median"]["visemes-frame"].get("closed", 0), per["frame_median"]["visemes-frame"].get("open", 0)))
    summary = {}
    print(f"{'class':<10} {'n':>5} {'loudness (before)':>18} {'visemes (after)':>16}  median ratio before/after"
          "   frame: loudness / visemes, median")
    for cls in sorted(totals["visemes"]):
        before, after = totals["loudness"][cls], totals["visemes"][cls]
        summary[cls] = {
            "n": len(after),
            "pass_before": _passed(cls, before),
            "pass_after": _passed(cls, after),
            "median_before": round(statistics.median(before), 3),
            "median_after": round(statistics.median(after), 3),
        }
        frame_before, frame_after = totals["loudness-frame"].get(cls), totals["visemes-frame"].get(cls)
        if frame_after:
            summary[cls].update({
                "frame_pass_before": _passed(cls, frame_before),
                "frame_pass_after": _passed(cls, frame_after),
                "frame_median_before": round(statistics.median(frame_before), 3),
                "frame_median_after": round(statistics.median(frame_after), 3),
            })
        s = summary[cls]
        passes = [f"{p:.1%}" if p is not None else "-" for p in (s["pass_before"], s["pass_after"])]
        print(f"{cls:<10} {s['n']:>5} {passes[0]:>18} {passes[1]:>16}  "
              f"{s['median_before']:.2f} / {s['median_after']:.2f}", end="")
        if "frame_pass_after" in s:
            print(f"   {s['frame_pass_before']:.1%} / {s['frame_pass_after']:.1%}, "
                  f"{s['frame_median_before']:.2f} / {s['frame_median_after']:.2f}", end="")
        print()
    result["summary"] = summary
    result["goals_met"] = {cls: summary[cls]["pass_after"] >= goal for cls, goal in GOALS.items() if cls in summary}
    result["frame_goals_met"] = {cls: summary[cls]["frame_pass_after"] >= GOALS[cls]
                                 for cls in ("closed", "open") if "frame_pass_after" in summary.get(cls, {})}
    print("goals:", ", ".join(f"{c} {'met' if ok else 'MISSED'} (>= {GOALS[c]:.0%})" for c, ok in result["goals_met"].items()))
    print("frame goals:", ", ".join(f"{c} {'met' if ok else 'MISSED'}" for c, ok in result["frame_goals_met"].items()))
    contact_sheet(examples, args.sheet)
    write_json(args.out, result, ensure_ascii=False)
    print(f"wrote {args.out} and {args.sheet}")


if __name__ == "__main__":
    main()
