"""structlog set-up: JSON lines for a daemon under systemd, readable lines for a person.

Everything that logs goes out in the one format: atsd's own structlog calls, and the
standard library's ``logging`` (asyncio's "task exception was never retrieved", pyzmq's
authenticator, warnings) through structlog's ProcessorFormatter, and an exception nobody
caught through ``sys.excepthook``. A traceback is a field of its line (``exception``), so a
JSON log stays one object per line.
"""

from __future__ import annotations

import logging
import sys
import threading

import structlog


def configure(fmt: str = "console", level: str = "info") -> None:
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    number = getattr(logging, level.upper())
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        # below the level a call is a no-op: debug logging costs nothing when it is off
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           stamp],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(number)
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = lambda args: _uncaught(args.exc_type, args.exc_value,
                                                  args.exc_traceback)


def debug_enabled() -> bool:
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def _uncaught(exc_type, exc, tb) -> None:
    get("atsd").critical("uncaught_exception", exc_info=(exc_type, exc, tb))


def get(name: str = "atsd"):
    return structlog.get_logger(name)
