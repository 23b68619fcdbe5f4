"""The one redaction helper (sentiment_ops/redaction.py) and where it is used without a
server: ``sentops config show``, the resolved-config artifact, params and tags of a train
run, CLI error lines, ``SentopsError`` messages, and the server's log configurations."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentiment_ops.config import load_settings
from sentiment_ops.errors import SentopsError, StoreError
from sentiment_ops.redaction import MASK, RedactingFilter, install_log_redaction, redact, redact_value
from sentiment_ops.tracking.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_server_log_configs_redact(log_format: str) -> None:
    """``sentops serve``'s logging config (in a process of its own: dictConfig is global)."""
    script = textwrap.dedent(
        f"""
        import logging, logging.config
        from sentiment_ops.serving.logs import log_config
        logging.config.dictConfig(log_config({log_format!r}, "INFO"))
        logging.getLogger("uvicorn.error").info("store at %s", "postgresql://u:S3cretPw@h/db")
        logging.getLogger("sentiment_ops.serving").warning("registry http://u:TrackPw@h:5000 down")
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/q?token=TrackPw", "1.1", 200
        )
        try:
            raise OSError("cannot reach http://u:TrackPw@h:5000")
        except OSError:
            logging.getLogger("sentiment_ops.serving").exception("failed")
        """
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    logged = result.stdout + result.stderr
    assert "S3cretPw" not in logged and "TrackPw" not in logged, logged
    assert "postgresql://u:***@h/db" in logged and "http://u:***@h:5000" in logged
    if log_format == "json":
        lines = [json.loads(line) for line in result.stderr.splitlines()]
        assert [e["logger"] for e in lines] == [
            "uvicorn.error",
            "sentiment_ops.serving",
            "uvicorn.access",
            "sentiment_ops.serving",
        ]
        assert lines[2]["path"] == "/q?token=***" and "OSError: cannot reach" in lines[3]["exc"]


# -- the CLI and what train logs --------------------------------------------------------------
STORE_URL = "postgresql+psycopg://app:S3cretPw-store@127.0.0.1:1/sentops"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_config_show_masks_passwords(cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTOPS_STORE__URL", STORE_URL)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://someuser:TrackPw-uri@127.0.0.1:5000")
    shown = cli("config", "show")
    as_json = cli("config", "show", "--json")
    for result in (shown, as_json):
        assert result.exit_code == 0, result.output
        assert "S3cretPw-store" not in result.stdout and "TrackPw-uri" not in result.stdout
    data = json.loads(as_json.stdout)
    assert data["store"]["url"] == data["resolved"]["store_url"] == "postgresql+psycopg://app:***@127.0.0.1:1/sentops"
    assert data["resolved"]["tracking_uri"] == "http://someuser:***@127.0.0.1:5000"
    assert yaml.safe_load(shown.stdout)["store"]["url"] == data["store"]["url"]


def test_cli_error_line_masks_the_tracking_password(cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://someuser:TrackPw-uri@127.0.0.1:{_closed_port()}")
    result = cli("models")
    assert result.exit_code == 69, result.output
    assert "TrackPw-uri" not in result.stderr
    assert "MLflow tracking server http://someuser:***@127.0.0.1:" in result.stderr


def test_train_logs_no_store_password(
    cli: Callable[..., Any], tiny_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The resolved-config artifact, params and tags of a train run (SQLite MLflow; the
    store is never opened by train, so its URL need not be reachable)."""
    monkeypatch.setenv("SENTOPS_STORE__URL", STORE_URL)
    result = cli("train", "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    registry = Registry(load_settings())
    local = Path(registry.client.download_artifacts(run_id, "config/resolved_config.yaml", str(tmp_path)))
    config = local.read_text()
    assert "S3cretPw-store" not in config
    assert yaml.safe_load(config)["store"]["url"] == "postgresql+psycopg://app:***@127.0.0.1:1/sentops"
    run = registry.client.get_run(run_id)
    version = registry.client.get_model_version(registry.model_name, "1")
    logged = json.dumps([run.data.params, run.data.tags, version.tags, version.description])
    assert "S3cretPw-store" not in logged and "golden_hash" in logged
