"""The locks in locks/ are complete, exact and hashed, and match the inputs a person edits.

A fresh machine installs with ``pip install --no-deps --require-hashes``: a package missing from
a lock, an unpinned line, or a line without a hash would fail there, not here, so check it here.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCKS = {
    "cpu-dev": REPO / "locks" / "cpu-dev.txt",
    "cpu-runtime": REPO / "locks" / "cpu-runtime.txt",
    "cuda": REPO / "locks" / "cuda.txt",
    "nodeps": REPO / "locks" / "nodeps.txt",
}
_REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    """name -> version for every requirement line, after checking that each carries a hash."""
    lines = path.read_text().splitlines()
    pins: dict[str, str] = {}
    for i, line in enumerate(lines):
        if not line or line[0] in "# " or line.startswith("--"):
            continue
        m = _REQ.match(line)
        assert m, f"{path.name}: not an exact, hashed pin: {line!r}"
        assert lines[i + 1].strip().startswith("--hash=sha256:"), f"{path.name}: {line} has no hash"
        pins[_norm(m.group(1))] = m.group(2)
    return pins


def _inputs(path: Path) -> set[str]:
    names: set[str] = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            names |= _inputs(path.parent / line[3:].strip())
            continue
        names.add(_norm(re.split(r"[<>=!~\[; ]", line, 1)[0]))
    return names


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_lock_pins_every_line_exactly_with_a_hash(name: str) -> None:
    text = LOCKS[name].read_text()
    assert "scripts/lock.sh" in "\n".join(text.splitlines()[:3]), "first lines name the command"
    assert _pins(LOCKS[name])


@pytest.mark.parametrize(
    ("lock", "inputs"),
    [("cpu-dev", "requirements-dev.txt"), ("cpu-runtime", "requirements.txt"),
     ("cuda", "requirements-gpu.txt"), ("nodeps", "requirements-nodeps.txt")],
)
def test_lock_covers_every_direct_dependency(lock: str, inputs: str) -> None:
    missing = _inputs(REPO / inputs) - set(_pins(LOCKS[lock]))
    assert not missing, f"{lock} lacks {sorted(missing)}: run scripts/lock.sh"


def test_runtime_lock_is_the_dev_lock_subset_and_torch_builds_differ() -> None:
    dev, runtime, cuda = (_pins(LOCKS[n]) for n in ("cpu-dev", "cpu-runtime", "cuda"))
    assert {k: dev[k] for k in runtime} == runtime  # users run what the tests ran
    assert dev["torch"] == "2.13.0+cpu" and cuda["torch"] == "2.13.0"
    assert not any(k.startswith("nvidia-") for k in dev)  # no CUDA libraries on the CPU path
    assert any(k.startswith("nvidia-") for k in cuda)


def test_installed_environment_is_the_lock() -> None:
    """The suite runs on exactly what cpu-dev locks (catches a hand-installed drift)."""
    pins = {**_pins(LOCKS["cpu-dev"]), **_pins(LOCKS["nodeps"])}
    wrong = {}
    for name, version in pins.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (version, None)
            continue
        if have != version:
            wrong[name] = (version, have)
    assert not wrong, f"installed packages differ from locks/cpu-dev.txt: {wrong}"
