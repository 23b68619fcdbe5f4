"""Secrets never leave the process: the one place that masks them in text and settings.

``redact`` masks the password of every URL's user info (``scheme://user:PASSWORD@host``),
``password=`` / ``token=``-style query and key-value parameters, and the values of the
server's bearer tokens found in the environment. Everything that is logged to MLflow, shown
by the CLI or the server, or written to a log line goes through it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

# scheme://user:password@host (a password holds no "/", "@" or space unless percent-encoded).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]*)@")
# password=..., pwd=..., token=..., secret=..., api_key=... in a query string or key-value text.
_KEYVALUE = re.compile(
    r"(?i)(?P<key>\b(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key|secret[_-]?key)\s*[=:]\s*)"
    r"(?P<value>[^\s&;,'\"]+)"
)
# Environment variables whose values are secrets wherever they turn up.
SECRET_ENV_NAMES = (
    "SENTOPS_ADMIN_TOKEN",
    "SENTOPS_FEEDBACK_TOKEN",
    "SENTOPS_PREDICT_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "PGPASSWORD",
    "AWS_SECRET_ACCESS_KEY",
)
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words


def _env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    values = {env.get(name, "") for name in SECRET_ENV_NAMES}
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True)


def redact(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """``text`` with every credential it holds replaced by ``***``."""
    if not text:
        return text
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    out = _KEYVALUE.sub(lambda m: f"{m['key']}{MASK}", out)
    for secret in [*_env_secrets(), *(s for s in extra_secrets if len(s) >= _MIN_SECRET_LEN)]:
        out = out.replace(secret, MASK)
    return out


def redact_value(value: Any) -> Any:
    """``value`` (settings as a dict, lists, strings) with every string passed through ``redact``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback text is built later from the exception; mask it through exc_text.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(formatted)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Mask credentials in every record handled by ``logger``'s handlers (the root logger's by
    default); idempotent."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
