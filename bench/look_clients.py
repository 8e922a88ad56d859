"""Look at several people talking at once: N headless Chromium pages, each with its own fake
microphone asking its own question at the same moment, each screenshotted mid-answer.

Starts ``python main.py`` (embedded default) unless ``--url`` names a running avatar (loopback
only). Each page runs in its own thread with its own browser, as separate people would. Prints,
per page, what the avatar heard, what it answered, the first audio in the page and the fps, and
writes the screenshots and a JSON summary to ``--out``. Usage:

    python -m bench.look_clients --clients 2 --out bench-results/look
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

from bench.avatar_process import AvatarProcess, is_loopback_url
from bench.browser import converse, summary, write_mic_wav
from bench.result_file import write_json

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What is your favorite color?",
    "Tell me about the moon.",
]
LEAD_S = 3.0  # silence before the question: every page connects before anyone speaks


def look(base_url: str, clients: int, out: Path) -> list[dict]:
    from tests.speech import mouth_box_of_default_avatar, piper_speech

    box = mouth_box_of_default_avatar()
    results: list[dict | None] = [None] * clients
    errors: list[BaseException] = []

    def one(i: int, wav: Path, speech_end_s: float) -> None:
        try:
            shot = out / f"client-{i}.png"
            conv = converse(base_url, wav, speech_end_s, box, screenshot=shot)
            results[i] = summary(conv) | {"question": QUESTIONS[i % len(QUESTIONS)], "screenshot": str(shot),
                                          "avatar_text": conv.avatar_text()}
        except BaseException as exc:  # reported below, after every page has finished
            errors.append(exc)

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        threads = []
        for i in range(clients):
            wav = Path(tmp) / f"q{i}.wav"
            speech_s = write_mic_wav(wav, piper_speech(QUESTIONS[i % len(QUESTIONS)]), LEAD_S, 25.0)
            threads.append(threading.Thread(target=one, args=(i, wav, LEAD_S + speech_s), daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
    if errors:
        raise RuntimeError(f"{len(errors)} of {clients} pages failed") from errors[0]
    return [r for r in results if r is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.look_clients", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2, help="pages talking at once (1-4, default 2)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/look"))
    parser.add_argument("--url", default=None, help="use an avatar that is already running (loopback)")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 4:
        parser.error("--clients must be between 1 and 4")
    if args.url is not None and not is_loopback_url(args.url):
        parser.error("--url must be a loopback address")
    proc = None
    url = args.url
    if url is None:
        proc = AvatarProcess(env={"AVATAR_MAX_CALLS": str(max(args.clients, 2))})
        proc.wait_ready()
        url = proc.url
    try:
        results = look(url, args.clients, args.out)
    finally:
        if proc is not None:
            proc.stop()
    for i, r in enumerate(results):
        print(f"client {i}: asked {r['question']!r}, heard {r['user_text']!r}, answered {r['avatar_text']!r}; "
              f"first audio {r['first_audio_ms']} ms, {r['fps']:.1f} fps; {r['screenshot']}")
    write_json(args.out / "look.json", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
