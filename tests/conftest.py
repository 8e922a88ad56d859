"""Shared fixtures: one real avatar (main.py) for the whole test session."""

from __future__ import annotations

import pytest

from bench.avatar_process import AvatarProcess


@pytest.fixture(scope="session")
def avatar():
    """The real embedded-default avatar, started once (model loading takes a while)."""
    proc = AvatarProcess()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
