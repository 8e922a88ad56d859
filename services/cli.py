"""The shared command line of every service entry point (``python -m services.<name>``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from services.runner import ServiceMain, run_service, setup_logging
from services.settings_util import SettingsError

logger = logging.getLogger(__name__)


def service_main(
    name: str,
    description: str,
    check: Callable[[], None],
    serve: Callable[[], ServiceMain],
    argv: list[str] | None = None,
) -> int:
    """``--help`` documents the service; ``--check`` validates config and models, then exits."""
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{name}",
        description=description,
        epilog="Settings come from AVATAR_* environment variables (see README and .env.example).",
    )
    parser.add_argument(
        "--check", action="store_true",
        help="validate the settings and that the configured models load, then exit (0 = ok)",
    )
    args = parser.parse_args(argv)
    if args.check:
        setup_logging(name)
        try:
            check()
        except (SettingsError, RuntimeError, OSError) as exc:
            logger.error("%s check failed: %s", name, exc)
            return 1
        logger.info("%s check passed", name)
        return 0
    try:
        main = serve()
    except SettingsError as exc:
        print(f"{name}: bad setting: {exc}", file=sys.stderr)
        return 2
    return run_service(name, main)
