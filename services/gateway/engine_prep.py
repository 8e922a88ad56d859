"""The lip-sync engine's own preparation of an uploaded avatar, asked of the lip-sync stage.

The gateway never loads an engine's models (Wav2Lip's generator, MuseTalk's VAE): the lip-sync
stage already holds them, in its own process. So an upload's job, once the store has the
avatar, sends ``PrepareAvatar`` on the control bus and follows the stage's ``AvatarPrepared``
events: their progress goes into the same job (GET /api/avatars/{id}, the page's bar).

- A PUB message to a stage that is (re)starting is lost, so the request is sent again while
  nothing is heard for ``resend_s``; the stage answers a repeat from the preparation in flight.
- A stage that never answers (not running) does not fail the upload: the store entry is
  complete, and the engine's step then runs when a session first shows the avatar (as for a
  library made before this existed). The job says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services import messages
from services.transport import Sender

logger = logging.getLogger(__name__)

Report = Callable[[str, float], None]


class EngineStepFailed(Exception):
    """The engine could not prepare the avatar; the message is for the person."""


@dataclass(slots=True)
class _Follow:
    news: asyncio.Event = field(default_factory=asyncio.Event)
    last: messages.AvatarPrepared | None = None


class EnginePreparations:
    def __init__(self, control: Sender, resend_s: float = 2.0, answer_s: float = 30.0) -> None:
        self._control = control
        self._resend_s = resend_s
        self._answer_s = answer_s
        self._follows: dict[str, list[_Follow]] = {}

    def on_event(self, msg: messages.AvatarPrepared) -> None:
        for follow in self._follows.get(msg.avatar, ()):
            follow.last = msg
            follow.news.set()

    async def run(self, avatar: str, report: Report) -> bool:
        """Until the engine's step of ``avatar`` is done: True, or False when lip-sync never
        answered. Raises ``EngineStepFailed`` with the stage's words."""
        follow = _Follow()
        self._follows.setdefault(avatar, []).append(follow)
        asked = time.monotonic()
        heard = False
        try:
            while True:
                await self._control.send(messages.PrepareAvatar("", 0, avatar))
                try:
                    await asyncio.wait_for(follow.news.wait(), self._resend_s)
                except asyncio.TimeoutError:
                    if not heard and time.monotonic() - asked > self._answer_s:
                        logger.warning("avatar %s: lip-sync did not answer in %.0f s; its engine step will run "
                                       "when a session first shows it", avatar, self._answer_s)
                        return False
                    continue
                while follow.news.is_set():
                    follow.news.clear()
                    heard = True
                    last = follow.last
                    assert last is not None
                    if last.state == "ready":
                        return True
                    if last.state == "failed":
                        raise EngineStepFailed(last.message or "the lip-sync engine could not prepare this avatar")
                    report(last.step, last.progress)
                    # Wait for more news without re-asking while the stage keeps talking.
                    try:
                        await asyncio.wait_for(follow.news.wait(), self._resend_s)
                    except asyncio.TimeoutError:
                        break
        finally:
            follows = self._follows.get(avatar, [])
            if follow in follows:
                follows.remove(follow)
            if not follows:
                self._follows.pop(avatar, None)
