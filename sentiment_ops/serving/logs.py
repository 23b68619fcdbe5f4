"""The server's log format: ``text`` (uvicorn's own lines, the default) or ``json`` (one
JSON object per line on stderr, for log shippers): ``ts`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, ``request_id`` on every line written while a request runs (and on
the dead-letter warnings of its rows), ``exc`` with a traceback, and for an access-log line
(``sentops serve --access-log``) ``method``, ``path``, ``status`` and ``client``.

``log_config`` is the ``logging.config.dictConfig`` that ``sentops serve`` hands uvicorn:
uvicorn's, sentops' and every other library's records go through the same formatter."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from sentiment_ops.redaction import RedactingFilter
from sentiment_ops.serving.request_ids import current_request_id

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id.get()
        if request_id:
            entry["request_id"] = request_id
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _http, status = record.args
            entry.update(method=method, path=path, status=status, client=client)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_config(log_format: str, level: str) -> dict[str, Any]:
    """uvicorn's ``log_config`` for ``serve.log_format`` (``text``: uvicorn's default);
    every handler masks credentials (``redaction.RedactingFilter``)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    if log_format == "text":
        config = copy.deepcopy(LOGGING_CONFIG)
    else:
        level = level.upper()
        config = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": JsonFormatter}},
            "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
            "loggers": {
                "uvicorn": {"handlers": ["json"], "level": level, "propagate": False},
                "uvicorn.error": {"level": level},
                "uvicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
                "sentiment_ops": {"level": level},  # propagates to the root's JSON handler
            },
            "root": {"handlers": ["json"], "level": "WARNING"},  # other libraries: warnings and up
        }
    config["filters"] = {**config.get("filters", {}), "redact": {"()": RedactingFilter}}
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "redact"]
    return config
