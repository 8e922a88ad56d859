"""Follow the gateway's control broadcast (session opened/closed, interrupts) in any stage."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from services import messages
from services.lanes import SessionLanes
from services.transport import Receiver
from services.turns import TurnTracker

logger = logging.getLogger(__name__)


async def follow_control(
    control: Receiver,
    turns: TurnTracker,
    on_interrupt: Callable[[messages.Interrupt], None],
    on_close: Callable[[str], None],
    on_credit: Callable[[messages.FlowCredit], None] | None = None,
    on_avatar: Callable[[messages.SessionAvatar], None] | None = None,
    on_prepare: Callable[[messages.PrepareAvatar], None] | None = None,
) -> None:
    """Apply control messages to ``turns`` and tell the stage; runs until cancelled.

    Flow credits, avatar choices and preparations are for lip-sync only; other stages ignore them (they hear
    the broadcast too).
    """
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
        elif isinstance(msg, messages.SessionAvatar):
            if on_avatar is not None and not turns.is_closed(msg.session):
                on_avatar(msg)
        elif isinstance(msg, messages.PrepareAvatar):
            if on_prepare is not None:
                on_prepare(msg)
        elif isinstance(msg, messages.FlowCredit):
            if on_credit is not None and not turns.is_closed(msg.session):
                on_credit(msg)
        else:
            logger.warning("unexpected control message %s", type(msg).__name__)


class Stage(Protocol):
    """What serve_stage needs of a pipeline stage (asr, llm, tts, lipsync)."""

    turns: TurnTracker

    async def handle(self, msg: Any) -> None: ...

    def on_interrupt(self, msg: messages.Interrupt) -> None: ...

    def on_close(self, session: str) -> None: ...


class Closable(Protocol):
    async def aclose(self) -> None: ...


class Pool(Protocol):
    """A worker pool to shut down (an Executor, or lanes.SessionThreads)."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


async def serve_stage(
    name: str,
    stage: Stage,
    accepts: type,
    inbox: Receiver,
    control: Receiver,
    lanes: SessionLanes[Any] | Closable,
    pool: concurrent.futures.Executor | Pool,
) -> None:
    """A stage's main loop: its input to ``stage.handle``, the control broadcast to its turn
    bookkeeping, until cancelled; then its lanes and worker pool are shut down."""
    control_task = asyncio.create_task(
        follow_control(
            control, stage.turns, stage.on_interrupt, stage.on_close,
            getattr(stage, "on_credit", None), getattr(stage, "on_avatar", None),
            getattr(stage, "on_prepare", None),
        ),
        name=f"{name}-control",
    )
    try:
        while True:
            msg = await inbox.recv()
            if isinstance(msg, accepts):
                await stage.handle(msg)
            else:
                logger.warning("%s ignored unexpected %s", name, type(msg).__name__)
    finally:
        control_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await control_task
        await lanes.aclose()
        pool.shutdown(wait=False, cancel_futures=True)
