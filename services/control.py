"""Follow the gateway's control broadcast (session opened/closed, interrupts) in any stage."""

from __future__ import annotations

import logging
from collections.abc import Callable

from services import messages
from services.transport import Receiver
from services.turns import TurnTracker

logger = logging.getLogger(__name__)


async def follow_control(
    control: Receiver,
    turns: TurnTracker,
    on_interrupt: Callable[[messages.Interrupt], None],
    on_close: Callable[[str], None],
) -> None:
    """Apply control messages to ``turns`` and tell the stage; runs until cancelled."""
    while True:
        msg = await control.recv()
        if isinstance(msg, messages.SessionOpened):
            turns.open(msg.session)
        elif isinstance(msg, messages.SessionClosed):
            turns.close(msg.session)
            on_close(msg.session)
        elif isinstance(msg, messages.Interrupt):
            if turns.advance(msg.session, msg.turn):
                on_interrupt(msg)
        else:
            logger.warning("unexpected control message %s", type(msg).__name__)
