"""Logging setup shared by every component, and a logger that says a lasting failure once.

A failing device is logged once at ERROR, then quietly (DEBUG) while it lasts, and once
more at INFO when it recovers: :class:`OnceLogger`.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """Every line with the secrets of any URL in it replaced (:func:`aquavolt.settings.redact`),
    whoever logged it (a library included), tracebacks too."""

    def format(self, record: logging.LogRecord) -> str:
        from aquavolt.settings import redact

        return redact(super().format(record))


def setup_logging(level: str | None = None, component: str = "aquavolt") -> None:
    """Configure the root logger once, on stderr, level from AQUAVOLT_LOG_LEVEL or INFO."""
    lvl = (level or os.environ.get("AQUAVOLT_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    for noisy in ("asyncua", "pymodbus", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger(component).debug("logging at %s", lvl)


class OnceLogger:
    """Logs a condition's start at ERROR, its repeats at DEBUG, its end at INFO."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._failing: dict[str, str] = {}

    def failure(self, key: str, message: str) -> None:
        if key not in self._failing:
            self._log.error("%s: %s", key, message)
        else:
            self._log.debug("%s: still failing: %s", key, message)
        self._failing[key] = message

    def recovered(self, key: str) -> None:
        if self._failing.pop(key, None) is not None:
            self._log.info("%s: recovered", key)

    def is_failing(self, key: str) -> bool:
        return key in self._failing
