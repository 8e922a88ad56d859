"""Static checks of the browser page in client/ (no browser needed).

The end-to-end browser test drives the page through these element ids, so a renamed id must fail
here first, with a message that names it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client"
HTML_PATH = CLIENT_DIR / "client.html"
JS_PATH = CLIENT_DIR / "client.js"
CSS_PATH = CLIENT_DIR / "client.css"

# The ids the Playwright test and the gateway's users rely on.
REQUIRED_IDS = (
    "start",
    "stop",
    "hangup",
    "avatar",
    "avatar-audio",
    "transcript",
    "text-input",
    "send",
    "error",
    "conn-state",
    "avatar-state",
    "stats-toggle",
    "stats",
)

# Every message type the server may send must have a handler in the page.
SERVER_MESSAGE_TYPES = (
    "config",
    "answer",
    "state",
    "transcript",
    "interrupted",
    "stats",
    "error",
    "pong",
    "waiting",
    "speech",
)

# Ways of turning a string into markup; server text must only ever go through textContent.
HTML_SINKS = re.compile(r"\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write)\b")


class _Elements(HTMLParser):
    """Collects each start tag with its attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))


def _parse_html() -> list[tuple[str, dict[str, str]]]:
    parser = _Elements()
    parser.feed(HTML_PATH.read_text(encoding="utf-8"))
    parser.close()
    return parser.tags


def test_html_loads_the_script_and_stylesheet_from_the_same_folder() -> None:
    tags = _parse_html()
    scripts = [attrs.get("src") for tag, attrs in tags if tag == "script"]
    styles = [
        attrs.get("href")
        for tag, attrs in tags
        if tag == "link" and attrs.get("rel") == "stylesheet"
    ]
    assert scripts == ["client.js", "avatars.js"], f"client.html should load client.js and avatars.js, found {scripts}"
    assert styles == ["client.css"], f"client.html should load exactly client.css, found {styles}"


def test_html_has_every_required_id_once() -> None:
    ids = [attrs["id"] for _, attrs in _parse_html() if "id" in attrs]
    missing = [i for i in REQUIRED_IDS if i not in ids]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    assert not missing, f"client.html lacks ids {missing}"
    assert not duplicated, f"client.html repeats ids {duplicated}"


def test_media_elements_have_the_expected_kind_and_autoplay() -> None:
    by_id = {attrs["id"]: (tag, attrs) for tag, attrs in _parse_html() if "id" in attrs}
    video_tag, video = by_id["avatar"]
    audio_tag, audio = by_id["avatar-audio"]
    assert video_tag == "video" and "autoplay" in video and "playsinline" in video
    assert audio_tag == "audio" and "autoplay" in audio
    assert "hidden" in by_id["error"][1], "the error banner must start hidden"


def test_every_id_the_script_looks_up_exists_in_the_html() -> None:
    ids = {attrs["id"] for _, attrs in _parse_html() if "id" in attrs}
    looked_up = set(re.findall(r"""\$\(\s*["']([\w-]+)["']\s*\)""", JS_PATH.read_text("utf-8")))
    assert looked_up, "client.js should look its elements up with $(\"id\")"
    assert looked_up <= ids, f"client.js looks up ids missing from client.html: {looked_up - ids}"


def test_script_never_writes_markup() -> None:
    # A plain grep, comments included: the file has no reason to name these at all.
    offending = [
        f"client.js:{number}: {line.strip()}"
        for number, line in enumerate(JS_PATH.read_text(encoding="utf-8").splitlines(), start=1)
        if HTML_SINKS.search(line)
    ]
    assert not offending, "use textContent, not markup sinks:\n" + "\n".join(offending)


def test_html_sink_pattern_catches_what_it_must() -> None:
    # Guards the check above against a regex that silently matches nothing.
    assert HTML_SINKS.search("el.innerHTML = msg.text;")
    assert HTML_SINKS.search("el.insertAdjacentHTML('beforeend', x)")
    assert not HTML_SINKS.search("el.textContent = msg.text;")


def test_script_handles_every_server_message_type() -> None:
    source = JS_PATH.read_text(encoding="utf-8")
    handled = set(re.findall(r"""case\s+["'](\w+)["']\s*:""", source))
    missing = [t for t in SERVER_MESSAGE_TYPES if t not in handled]
    assert not missing, f"client.js has no handler for server messages {missing}"


def test_page_loads_nothing_from_the_internet() -> None:
    remote = re.compile(r"^\s*(https?:)?//", re.I)
    external = [
        f"<{tag} {name}={value}>"
        for tag, attrs in _parse_html()
        for name, value in attrs.items()
        if name in {"src", "href", "poster", "action"} and remote.match(value)
    ]
    css = CSS_PATH.read_text(encoding="utf-8")
    external += re.findall(r"@import[^;]*|url\(\s*['\"]?(?:https?:)?//[^)]*\)", css, flags=re.I)
    assert not external, f"the page must work offline; remote references: {external}"


def test_script_is_valid_javascript() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; install nodejs to syntax-check client/client.js")
    result = subprocess.run(
        [node, "--check", str(JS_PATH)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"node --check client/client.js failed:\n{result.stderr}"
