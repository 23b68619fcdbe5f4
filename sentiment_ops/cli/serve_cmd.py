"""``sentops serve``: the model behind an alias, over HTTP (uvicorn; ``--workers N`` processes)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sentiment_ops.cli.choices import Backend, LogFormat, value
from sentiment_ops.cli.common import LEGACY_CONFIG_HELP, console, from_setting, settings_from
from sentiment_ops.errors import SentopsError
from sentiment_ops.paths import writable_dir

if TYPE_CHECKING:
    from sentiment_ops.config import Settings
    from sentiment_ops.store import InferenceStore

WORKERS_HELP = (
    "Server processes on the port, each with its own model, store writer and alias polling and cores / N threads."
)
UVICORN_STARTUP_FAILURE = 3  # uvicorn's sys.exit code when start-up (lifespan, bind) fails


HostOption = Annotated[str | None, typer.Option("--host", help=f"Interface to bind ({from_setting('serve.host')}).")]
PortOption = Annotated[int | None, typer.Option("--port", help=f"TCP port ({from_setting('serve.port')}).")]
AliasOption = Annotated[
    str | None, typer.Option("--alias", help=f"Model alias to serve ({from_setting('serve.alias')}).")
]
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", hidden=True, help=LEGACY_CONFIG_HELP)]
BackendOption = Annotated[
    Backend | None,
    typer.Option(
        "--backend",
        help=f"onnx: the int8 graph logged with the version; torch: fp32 ({from_setting('serve.backend')}).",
    ),
]
AccessLogFlag = Annotated[bool, typer.Option("--access-log", help="Log every request (costs throughput).")]
LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option("--log-format", help="text, or json: one JSON object per line, with the request id."),
]
WorkersOption = Annotated[int, typer.Option("--workers", min=1, help=WORKERS_HELP)]


def serve(
    ctx: typer.Context,
    *,
    host: HostOption = None,
    port: PortOption = None,
    alias: AliasOption = None,
    config: ConfigOption = None,
    backend: BackendOption = None,
    access_log: AccessLogFlag = False,
    log_format: LogFormatOption = None,
    workers: WorkersOption = 1,
) -> None:
    """Serve the model behind an alias with FastAPI; log predictions; hot-reload on promotion.

    The server starts even when no version is behind the alias yet (/ready answers 503
    until one is promoted). API docs at http://HOST:PORT/docs.

    Example: sentops serve --port 8000 --alias production
    """
    from sentiment_ops.redaction import install_log_redaction
    from sentiment_ops.serving.app import check_tokens
    from sentiment_ops.serving.http_protocol import check_uvicorn
    from sentiment_ops.store import open_store

    if config is not None:
        ctx.find_root().obj["config"] = config
    settings = settings_from(
        ctx,
        {
            "serve.host": host,
            "serve.port": port,
            "serve.alias": alias,
            "serve.backend": value(backend),
            "serve.log_format": value(log_format),
        },
    )
    logging.getLogger("sentiment_ops").setLevel(settings.log_level.upper())
    check_tokens(settings)  # before anything starts, also for --workers N
    check_uvicorn()  # the internals HeadLimitProtocol relies on
    # Check the home and open the store here, not in the app's startup: a home that cannot
    # be written (the ONNX cache, an embedded MLflow), a store that cannot be reached or
    # whose schema is behind (`sentops db upgrade`) is one line and exit 70, not a traceback.
    writable_dir(settings.home)
    store = open_store(settings)
    app = _app(settings, store, workers)
    install_log_redaction()  # the root handler; uvicorn's own handlers mask through log_config
    console.print(
        f"serving alias [bold]{settings.serve.alias}[/bold] of {settings.mlflow.model_name} "
        f"({settings.serve.backend}) on http://{settings.serve.host}:{settings.serve.port}"
        + (f" with {workers} worker processes" if workers > 1 else "")
    )
    try:
        _run(app, settings, workers, access_log)
    finally:
        store.close()


def _run(app: Any, settings: Settings, workers: int, access_log: bool) -> None:
    """uvicorn with the protocol that bounds request heads (serving/http_protocol.py)."""
    from sentiment_ops.serving.http_protocol import HeadLimitProtocol
    from sentiment_ops.serving.logs import log_config

    serve_until_stopped(
        app,
        factory=workers > 1,
        host=settings.serve.host,
        port=settings.serve.port,
        workers=workers,
        access_log=access_log,
        log_level=settings.log_level.lower(),
        log_config=log_config(settings.serve.log_format, settings.log_level),
        timeout_graceful_shutdown=30,
        http=HeadLimitProtocol,
    )


def _app(settings: Settings, store: InferenceStore, workers: int) -> Any:
    """The app, or for ``workers`` > 1 the import string of the factory each worker process
    calls: the settings travel as JSON and each worker opens its own store."""
    from sentiment_ops.serving import create_app
    from sentiment_ops.serving.app import worker_settings
    from sentiment_ops.settings_layers import WORKER_SETTINGS_ENV

    if workers == 1:
        return create_app(settings, store=store)
    store.close()
    os.environ[WORKER_SETTINGS_ENV] = worker_settings(settings, workers).model_dump_json()
    return "sentiment_ops.serving.app:create_app_from_env"


def serve_until_stopped(app: Any, **options: Any) -> None:
    """``uvicorn.run``, whose start-up failure exit code (3) must not read as our "drift
    detected": a server that did not start is exit 1, after uvicorn's own log lines."""
    import uvicorn

    try:
        uvicorn.run(app, **options)
    except SystemExit as exc:
        if exc.code == UVICORN_STARTUP_FAILURE:
            raise SentopsError("the server did not start (its log above says why)") from None
        raise
