"""Structured logging for every part of the project (JSON lines, or console when asked)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from crimes.ops import requests

_configured = False


def configure(level: str | None = None) -> None:
    """Configure structlog once; `CRIMES_LOG_FORMAT=console` gives human-readable lines."""
    global _configured
    if _configured:
        return
    level_name = (level or os.environ.get("CRIMES_LOG_LEVEL", "INFO")).upper()
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if os.environ.get("CRIMES_LOG_FORMAT", "json") == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            requests.add_to_log,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(name: str) -> Any:
    configure()
    return structlog.get_logger(name)
