"""Structured JSON-line logging for the API.

One line per request on the ``churn.access`` logger (built by the middleware as a dict and
encoded once with msgspec), service events on ``churn.service``. Both go to stderr through
:class:`JsonFormatter`; configuration is idempotent so several apps (tests) can share a process.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import msgspec

ACCESS_LOGGER = "churn.access"
SERVICE_LOGGER = "churn.service"
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}`` as one JSON line.

    A dict passed as the message (access log) is merged into the line as is; other records
    carry their ``extra={...}`` fields and, for exceptions, the formatted traceback.
    """

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        line: dict[str, Any] = {"ts": ts, "level": record.levelname.lower(), "logger": record.name}
        if isinstance(record.msg, dict):
            line.update(record.msg)
        else:
            line["msg"] = record.getMessage()
            for key, value in record.__dict__.items():
                if key not in _RESERVED and not key.startswith("_"):
                    line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(line).decode()


def _default(obj: Any) -> Any:
    return str(obj)


_encoder = msgspec.json.Encoder(enc_hook=_default)


def configure_logging(level: int = logging.INFO) -> None:
    """Attach one JSON stderr handler to the API loggers (once per process)."""
    for name in (ACCESS_LOGGER, SERVICE_LOGGER):
        logger = logging.getLogger(name)
        if any(getattr(h, "_churn_json", False) for h in logger.handlers):
            continue
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._churn_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


access_log = logging.getLogger(ACCESS_LOGGER)
log = logging.getLogger(SERVICE_LOGGER)
