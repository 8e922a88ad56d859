"""Failures that restarting cannot fix: a missing model, a bad setting, no CUDA.

A service that stops on one of these exits with ``EX_CONFIG`` (78, sysexits.h "configuration
error") instead of 1. In containers, scripts/docker-entrypoint.sh parks such a service with its
reason as the last log line, where ``restart: unless-stopped`` would otherwise start it again
and again; a crash (any other exception) still exits 1 and is restarted.
"""

from __future__ import annotations

EX_CONFIG = 78


class ConfigurationError(Exception):
    """Base of the errors a restart cannot fix; the message says what to change."""
