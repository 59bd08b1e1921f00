"""Logging set-up, done once by the entry point: key=value text lines or JSON objects."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from imgsearch.settings import LogFormat

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Control characters, shown escaped: a file name with a newline cannot forge a log line.
_ESCAPES = {code: repr(chr(code))[1:-1] for code in [*range(32), 127]}


class OneLineFormatter(logging.Formatter):
    """Text lines that stay one line per event, whatever the message holds (a traceback, added
    after the message, keeps its own lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return super().formatMessage(record).translate(_ESCAPES)


def configure_logging(level: str, fmt: LogFormat) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == LogFormat.JSON:
        handler.setFormatter(
            JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", timestamp=True)
        )
    else:
        handler.setFormatter(OneLineFormatter(_TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter that does not help an operator.
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
