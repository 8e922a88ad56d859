"""What every service process does around its own work: logging, signals, readiness, heartbeats.

A service's entry point builds its settings, then calls ``run_service(name, main)`` where
``main(transport, ready)`` is its top-level coroutine and calls ``ready()`` once its models are
loaded and its sockets are bound. ``ready()`` tells the supervisor and starts the heartbeat
(services/heartbeat.py), a task on this loop that beats until the service stops. SIGTERM and
SIGINT cancel ``main`` (phased shutdown: the coroutine's ``finally`` blocks run), then the
heartbeat, then the sockets close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from services import messages
from services.config_errors import EX_CONFIG, ConfigurationError
from services.endpoints import Endpoints
from services.health import heartbeat_path, remove_record
from services.heartbeat import Heartbeat
from services.transport import Transport

logger = logging.getLogger(__name__)

Ready = Callable[[], Awaitable[None]]
_HEARTBEAT_STOP_S = 1.0
ServiceMain = Callable[[Transport, Ready], Awaitable[None]]


def setup_logging(service: str) -> None:
    level = os.environ.get("AVATAR_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s {service:8s} %(levelname)-7s %(name)s: %(message)s",
    )


def run_service(service: str, main: ServiceMain, endpoints: Endpoints | None = None) -> int:
    """Run ``main`` in a fresh event loop until it returns or a signal stops it."""
    setup_logging(service)
    endpoints = endpoints or Endpoints.from_env()
    try:
        asyncio.run(_run(service, main, endpoints))
    except ConfigurationError as exc:
        # A missing model or a bad setting: the message says what to change, and a restart
        # cannot fix it, so the status tells a container's entrypoint to park, not restart.
        logger.error("%s cannot start: %s", service, exc)
        return EX_CONFIG
    except Exception:
        logger.exception("%s service failed", service)
        return 1
    return 0


async def _run(service: str, main: ServiceMain, endpoints: Endpoints) -> None:
    loop = asyncio.get_running_loop()
    transport = Transport(endpoints)
    supervisor = transport.push(endpoints.supervisor) if endpoints.supervisor else None
    beat_file = heartbeat_path(service)
    # A file left by an earlier run (a container restart keeps /tmp) would say "healthy" for a
    # process that is still loading, with a pid that may now be someone else's.
    remove_record(beat_file)
    heartbeat: asyncio.Task[None] | None = None

    async def ready() -> None:
        nonlocal heartbeat
        if heartbeat is not None:
            return
        logger.info("%s ready (pid %d)", service, os.getpid())
        if supervisor is not None:
            await supervisor.send(messages.ServiceReady("", 0, service, os.getpid()))
        heartbeat = asyncio.create_task(
            Heartbeat(service, supervisor, beat_file).run(), name=f"{service}-heartbeat"
        )
        heartbeat.add_done_callback(_heartbeat_ended)

    task = asyncio.create_task(main(transport, ready), name=f"{service}-main")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        if heartbeat is not None:
            heartbeat.cancel()
            # Its own failure, if any, was logged when it ended; it must not stop the shutdown.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                async with asyncio.timeout(_HEARTBEAT_STOP_S):
                    await heartbeat
        transport.close()
        logger.info("%s stopped", service)


def _heartbeat_ended(task: asyncio.Task[None]) -> None:
    # Without beats the supervisor restarts this service: say why, where the restart is seen.
    if not task.cancelled() and task.exception() is not None:
        logger.error("the heartbeat stopped; this service will be restarted as hung", exc_info=task.exception())
