"""structlog configured once, at program entry: console for humans, JSON on request.

Library modules only ever do ``structlog.get_logger(__name__).bind(...)``;
this is the one place that decides how log events are rendered.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def configure(*, json: bool = False, level: str = "warning", stream: TextIO | None = None) -> None:
    """Render log events as JSON lines (``json=True``) or for a console.

    Output goes to ``stream`` (stderr by default) so that command output on
    stdout stays machine-readable.
    """
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.dict_tracebacks,
                       structlog.processors.JSONRenderer(sort_keys=True)]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
