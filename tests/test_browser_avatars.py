"""Bring your own face, in a real browser against the real avatar (``python main.py``):

- page A uploads a bad photo and sees the clear error in the page; then uploads its own photo,
  sees the progress bar move, gets a preview, talks, and the face that answers is theirs;
- page B, at the same time, talks to the astronaut.

Screenshots of both pages while the avatars answer go to out/.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.browser import CHROMIUM, chromium_args, write_mic_wav
from bench.avatar_files import astronaut, bad_files, my_face, write_photo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OUT = Path(__file__).resolve().parent.parent / "out"
QUESTION = "Hello! Who are you?"

# The received video, shrunk to 32x32 grey, and its size.
_GRAB = """() => {
  const v = document.getElementById('avatar');
  const c = document.createElement('canvas'); c.width = 32; c.height = 32;
  const ctx = c.getContext('2d'); ctx.drawImage(v, 0, 0, 32, 32);
  const d = ctx.getImageData(0, 0, 32, 32).data, g = [];
  for (let i = 0; i < d.length; i += 4) g.push((d[i] + d[i + 1] + d[i + 2]) / 3);
  return { w: v.videoWidth, h: v.videoHeight, grey: g };
}"""


def _grey32(rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(rgb, (32, 32), interpolation=cv2.INTER_AREA).mean(axis=2).ravel()


def _corr(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def _start_and_ask(page) -> None:
    page.click("#start")
    page.wait_for_function("window.avatarClient.connectionState === 'connected'", timeout=60_000)
    page.fill("#text-input", QUESTION)
    page.click("#send")


def test_my_face_answers_me_while_another_page_talks_to_the_astronaut(avatar, tmp_path):
    from playwright.sync_api import sync_playwright

    OUT.mkdir(exist_ok=True)
    face = my_face()
    face[0, 0] = np.random.default_rng().integers(0, 255, 3)  # a new upload, never one already stored
    photo = write_photo(tmp_path / "me.png", face)
    blurred = bad_files(tmp_path / "bad")["blurred.jpg"][0]
    silence = tmp_path / "silence.wav"
    write_mic_wav(silence, np.zeros(16000, np.int16), 0.5, tail_s=120.0)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(silence))
        try:
            pages = []
            for _ in range(2):
                ctx = browser.new_context(viewport={"width": 1200, "height": 900}, bypass_csp=True)
                page = ctx.new_page()
                page.goto(avatar.url + "/")
                page.wait_for_selector(".avatar-item")
                pages.append(page)
            mine, other = pages

            # A bad photo: a clear error in the page, nothing added.
            mine.set_input_files("#avatar-file", str(blurred))
            mine.wait_for_selector("#avatar-message:not([hidden])", timeout=60_000)
            assert "blurred" in mine.text_content("#avatar-message")

            mine.fill("#avatar-name", "Me")
            mine.set_input_files("#avatar-file", str(photo))
            progress, deadline = [], time.monotonic() + 90
            while not mine.is_visible("#avatar-preview"):
                assert time.monotonic() < deadline, "the preparation did not finish"
                if mine.is_visible("#avatar-progress"):
                    progress.append(float(mine.eval_on_selector("#avatar-progress-bar", "e => e.value")))
                mine.wait_for_timeout(30)
            assert len(set(progress)) >= 2 and max(progress) <= 1.0, progress
            chosen = mine.evaluate("window.avatarPicker.chosen()")
            assert len(chosen) == 16 and mine.is_visible(f'.avatar-item[data-id="{chosen}"][aria-checked="true"]')
            assert mine.is_hidden("#avatar-message") or "blurred" not in mine.text_content("#avatar-message")

            for page in pages:  # both conversations at once
                _start_and_ask(page)
            for page, name in ((mine, "mine"), (other, "astronaut")):
                page.wait_for_selector('#transcript .entry[data-role="avatar"]', timeout=240_000)
                page.wait_for_timeout(500)
                page.screenshot(path=str(OUT / f"browser-avatar-{name}.png"))
            seen = {name: page.evaluate(_GRAB) for page, name in ((mine, "mine"), (other, "astronaut"))}
            assert mine.evaluate("window.avatarClient.avatar") == chosen
            assert other.evaluate("window.avatarClient.avatar") == "astronaut"
            for page in pages:
                page.wait_for_selector('#transcript .entry[data-role="avatar"][data-final="true"]', timeout=240_000)
                page.click("#hangup")
        finally:
            browser.close()
    # Each page shows its own face, at its own size: theirs, not the astronaut, and vice versa.
    assert (seen["mine"]["w"], seen["mine"]["h"]) == (560, 640)
    assert (seen["astronaut"]["w"], seen["astronaut"]["h"]) == (512, 512)
    assert _corr(seen["mine"]["grey"], _grey32(face)) > 0.9
    assert _corr(seen["astronaut"]["grey"], _grey32(astronaut())) > 0.9
    assert _corr(seen["mine"]["grey"], _grey32(astronaut())) < 0.6
    # Leave the library as it was.
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{avatar.url}/api/avatars/{chosen}", method="DELETE"))
