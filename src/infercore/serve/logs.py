"""Structured logs: one JSON object a line, with the ``extra=`` fields of each record."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["JsonFormatter", "configure_logging"]

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import orjson

        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(
    level: int = logging.INFO, access: bool = False, stream: TextIO | None = None
) -> Callable[[], None]:
    """JSON lines on stderr for infercore's loggers (the server's, and those of what it runs: the
    Batcher's layout and second look, signature checks) and uvicorn's errors. Returns what puts
    those loggers back as they were (``infercore serve`` run in a process that goes on)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    json_loggers = (logging.getLogger("infercore"), logging.getLogger("uvicorn.error"))
    access_logger = logging.getLogger("infercore.serve.access")
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in (*json_loggers, access_logger)]
    for logger in json_loggers:
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    access_logger.setLevel(logging.INFO if access else logging.WARNING)

    def restore() -> None:
        for lg, handlers, lvl, propagate in saved:
            lg.handlers[:] = handlers
            lg.setLevel(lvl)
            lg.propagate = propagate

    return restore
