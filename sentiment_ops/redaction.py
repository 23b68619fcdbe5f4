"""Secrets never leave the process: the one place that masks them in text and settings.

``redact`` masks the password of every URL's user info (``scheme://user:PASSWORD@host``,
also when the password holds an unencoded ``@`` or ``/``), ``password=`` / ``token=``-style
query and key-value parameters (``"password": "…"`` in JSON too), the values of the
server's bearer tokens and of MLflow's and PostgreSQL's password variables found in the
environment, and the passwords of the URLs configured in the environment wherever they turn
up, percent-decoded or not. ``redact_value`` does the same to every string of a settings
dict, and masks the whole value of a key named like a secret (``password``, ``api_key``).
Everything that is logged to MLflow, shown by the CLI or the server, or written to a log
line goes through it; ``SentopsError`` messages are redacted when raised.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

MASK = "***"

# scheme://user:password@host. The password ends at the last "@" that a host (name, IPv4,
# [IPv6], :port, or nothing: a socket path follows) and then the URL's end follow, so a
# password with "@" or "/" is masked whole; "host:8080/a@b" (a port, then a path) is no password.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/\s'\"<>]*):(?!\d{1,5}(?:[/?#]|$))"
    r"(?P<pw>[^\s'\"<>]*?)@(?=[A-Za-z0-9.\-_~%\[\]:]*(?:[/?#\s'\"<>,;)}\]]|$))"
)
# The words that make a key a secret's: password=…, sslpassword = …, "token": "…", api_key=…
# (a bare ``key: value`` is prose as often as YAML: settings dicts go through redact_value).
_SECRET_WORDS = r"(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key|credentials?)"
_KEYVALUE = re.compile(
    rf"(?i)(?P<key>\b\w*?{_SECRET_WORDS}(?:\s*=\s*|(?P<q>[\"'])\s*:\s*))(?P<open>[\"'])?"
    r"(?P<value>(?(open)[^\"'\n]+|[^\s&;,'\"]+))"
)
_AUTH_HEADER = re.compile(r"(?i)(?P<key>\bauthorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+)[^\s'\",;]+")
_SECRET_KEY = re.compile(rf"(?i){_SECRET_WORDS}$")
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
# Environment variables holding URLs: their passwords are masked also outside URL form.
URL_ENV_NAMES = (
    "SENTOPS_STORE__URL",
    "SENTOPS_MLFLOW__TRACKING_URI",
    "SENTOPS_MLFLOW__REGISTRY_URI",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
)
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words


def url_passwords(text: str) -> list[str]:
    """The passwords of the URLs in ``text``, as written and percent-decoded."""
    found: set[str] = set()
    for m in _USERINFO.finditer(text):
        found |= {m["pw"], unquote(m["pw"])}
    return [s for s in found if len(s) >= _MIN_SECRET_LEN]


def _env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    values = {env.get(name, "") for name in SECRET_ENV_NAMES}
    for name in URL_ENV_NAMES:
        if "@" in env.get(name, ""):
            values.update(url_passwords(env[name]))
    return [v for v in values if len(v) >= _MIN_SECRET_LEN]


def _mask_keyvalue(m: re.Match[str]) -> str:
    if m["value"] == MASK:
        return m[0]
    return f"{m['key']}{m['open'] or ''}{MASK}"


def redact(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """``text`` with every credential it holds replaced by ``***``; ``extra_secrets`` are
    masked too (values of 4 characters or more)."""
    if not text:
        return text
    secrets = {*_env_secrets(), *(s for s in extra_secrets if len(s) >= _MIN_SECRET_LEN)}
    if "@" in text:
        secrets.update(url_passwords(text))
    out = text
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: no half-masked secret
        out = out.replace(secret, MASK)
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", out)
    out = _AUTH_HEADER.sub(lambda m: f"{m['key']}{MASK}", out)
    return _KEYVALUE.sub(_mask_keyvalue, out)


def redact_value(value: Any) -> Any:
    """``value`` (settings as a dict, lists, strings) with every string passed through
    ``redact``, and the string under a key named like a secret masked whole."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            k: MASK if isinstance(k, str) and isinstance(v, str) and v and _SECRET_KEY.search(k) else redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def _redact_arg(arg: Any) -> Any:
    """A log record's argument: strings redacted; other objects replaced by their redacted
    text only when that text held a secret (numbers keep ``%d`` working)."""
    if isinstance(arg, str):
        return redact(arg)
    if isinstance(arg, int | float | bool) or arg is None:
        return arg
    text = str(arg)
    clean = redact(text)
    return arg if clean == text else clean


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in a record's message, its arguments (kept
    a tuple where formatters read them, as uvicorn's access formatter does) and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        if redact(message) != message:
            if isinstance(record.msg, str):
                record.msg = redact(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(_redact_arg(a) for a in record.args)
            elif isinstance(record.args, Mapping):
                record.args = {k: _redact_arg(v) for k, v in record.args.items()}
            try:
                still = record.getMessage()
            except (TypeError, ValueError):
                still = message
            if redact(still) != still:  # a secret across the format and its arguments
                record.msg, record.args = redact(still), None
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback text is built later from the exception; mask it through exc_text.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Mask credentials in every record handled by ``logger``'s handlers (by default the root
    logger's, and ``logging.lastResort``, which writes when there are none) as they are now;
    idempotent. Handlers added later need their own filter (``serving.logs.log_config``
    gives uvicorn's handlers one)."""
    target = logger or logging.getLogger()
    handlers = list(target.handlers)
    if logger is None and logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
