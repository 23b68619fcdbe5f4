"""The one redaction helper (sentiment_ops/redaction.py): URLs, key-value secrets, secrets of
the environment, settings dicts, SentopsError messages and log records."""

from __future__ import annotations

import io
import logging

import pytest

from sentiment_ops.errors import SentopsError, StoreError
from sentiment_ops.redaction import MASK, RedactingFilter, install_log_redaction, redact, redact_value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+psycopg://sentops:S3cretPw@db:5432/sentops", "postgresql+psycopg://sentops:***@db:5432/sentops"),
        ("http://someuser:TrackPw@127.0.0.1:5000", "http://someuser:***@127.0.0.1:5000"),
        ("postgresql://u:p@ss@host:5432/db", "postgresql://u:***@host:5432/db"),  # "@" in the password
        ("postgresql://u:pa/ss@host/db", "postgresql://u:***@host/db"),  # "/" in the password
        ("postgresql://u:pa%40ss@host/db", "postgresql://u:***@host/db"),  # percent-encoded
        ("https://me@corp.com:Pw1234@mlflow.example.com/api", "https://me@corp.com:***@mlflow.example.com/api"),
        ("postgresql://u:Pw1234@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),  # IPv6 host
        ("postgresql://u:Pw1234@/db?host=/run/pg", "postgresql://u:***@/db?host=/run/pg"),  # socket, no host
        ("redis://:OnlyPw99@cache:6379/0", "redis://:***@cache:6379/0"),  # no user name
        ("two http://a:Pw1111@h1/x and http://b:Pw2222@h2/y", "two http://a:***@h1/x and http://b:***@h2/y"),
        ("cannot open 'postgresql://u:Pw1234@h/db': refused", "cannot open 'postgresql://u:***@h/db': refused"),
        ('{"url": "postgresql://u:Pw1234@h/db"}', '{"url": "postgresql://u:***@h/db"}'),
        ("url: postgresql://u:Pw1234@h:5432/db\nnext: 1", "url: postgresql://u:***@h:5432/db\nnext: 1"),
        ("host=h user=u password=hunter22 dbname=d", "host=h user=u password=*** dbname=d"),  # libpq conninfo
        ("http://h/x?user=a&password=hunter22&n=1", "http://h/x?user=a&password=***&n=1"),
        ('{"password": "two words", "n": 1}', '{"password": "***", "n": 1}'),
        ("{'api_key': 'abc123'}", "{'api_key': '***'}"),
        ("sslpassword = xyz123", "sslpassword = ***"),
        ("PGPASSWORD=xyz123 psql", "PGPASSWORD=*** psql"),
        ("Authorization: Bearer abcdef123", "Authorization: Bearer ***"),
    ],
)
def test_redact_masks_credentials(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "models:/sentiment-classifier@production",  # an alias, not user info
        "mlflow-artifacts:/1/abc/artifacts",
        "http://host:8080/path/user@example.com",  # a port and a path, then "@"
        "http://127.0.0.1:5000/#/models/x@y",
        "https://token@github.com/x.git",  # a user name alone is not masked
        "sqlite:////home/me@corp/mlflow.db",
        "the label-writer token: labels train the next model",  # prose
        "batch_max_tokens=384 head_tokens=64",
        "postgresql+psycopg://sentops:***@db:5432/sentops",
    ],
)
def test_redact_leaves_other_text_alone(text: str) -> None:
    assert redact(text) == text


def test_secrets_from_the_environment_are_masked_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTOPS_ADMIN_TOKEN", "adm-0123456789")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "EnvPw-42")
    monkeypatch.setenv("SENTOPS_STORE__URL", "postgresql://u:p%40ss%2Fw0rd@h/db")
    text = "token adm-0123456789, auth EnvPw-42, the driver said p@ss/w0rd and p%40ss%2Fw0rd"
    assert redact(text) == f"token {MASK}, auth {MASK}, the driver said {MASK} and {MASK}"
    assert redact("abc", extra_secrets=["abc"]) == "abc"  # too short to be told from words
    assert redact("key: 7f3a9c", extra_secrets=["7f3a9c"]) == f"key: {MASK}"


def test_redact_value_walks_settings() -> None:
    settings = {
        "store": {"url": "postgresql://u:Pw1234@h/db", "pool_size": 5, "store_text": True},
        "mlflow": {"tracking_uri": "http://u:Pw5678@h:5000", "registry_uri": None},
        "hosts": ["http://a:Pw9999@h1", "plain"],
        "password": "hunter22",
        "feedback_token": "abc",
        "head_tokens": 64,
    }
    assert redact_value(settings) == {
        "store": {"url": "postgresql://u:***@h/db", "pool_size": 5, "store_text": True},
        "mlflow": {"tracking_uri": "http://u:***@h:5000", "registry_uri": None},
        "hosts": ["http://a:***@h1", "plain"],
        "password": MASK,
        "feedback_token": MASK,
        "head_tokens": 64,
    }


def test_sentops_errors_are_redacted_when_raised() -> None:
    err = StoreError("cannot open inference store postgresql://u:S3cretPw@h/db: password=S3cretPw refused")
    assert "S3cretPw" not in str(err) and "postgresql://u:***@h/db" in str(err)
    assert err.args == (str(err),)
    assert SentopsError(3, None).args == (3, None)  # non-text arguments as given


# -- log records ------------------------------------------------------------------------------
def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"sentops-test-redaction-{id(handler)}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    install_log_redaction(logger)
    return logger


def test_filter_masks_message_args_and_traceback() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = _logger(handler)
    install_log_redaction(logger)  # idempotent
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    logger.info("HTTP Request: GET %s %d", "http://someuser:TrackPw@127.0.0.1:5000/health", 200)
    logger.warning("store %(url)s down", {"url": "postgresql://u:S3cretPw@h/db"})
    try:
        raise ConnectionError("cannot reach postgresql://u:S3cretPw@h/db")
    except ConnectionError:
        logger.exception("write failed for %s", ValueError("password=S3cretPw"))
    text = out.getvalue()
    assert "TrackPw" not in text and "S3cretPw" not in text, text
    assert "GET http://someuser:***@127.0.0.1:5000/health 200" in text
    assert "store postgresql://u:***@h/db down" in text
    assert "ConnectionError: cannot reach postgresql://u:***@h/db" in text  # the traceback


def test_filter_keeps_uvicorn_access_arguments() -> None:
    """uvicorn's access formatter unpacks the record's five arguments: they stay a tuple."""
    from uvicorn.logging import AccessFormatter

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False))
    logger = _logger(handler)
    logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "GET", "/x?password=S3cretPw", "1.1", 200)
    assert out.getvalue().strip() == '127.0.0.1:5555 - "GET /x?password=*** HTTP/1.1" 200 OK'
