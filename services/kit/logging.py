"""Structured logging, configured once per process: JSON lines on stderr."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_configured = False


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Idempotent: the run command starts many servers in one process."""
    global _configured  # noqa: PLW0603 - process-wide, set once
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter stays at WARNING unless asked for.
    for noisy in ("kafka", "urllib3", "httpx", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _configured = True
