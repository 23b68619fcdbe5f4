"""Shared pieces of the serving tests: a tiny model trained once per session (through the
real ``sentops train`` and ``sentops promote``), copied into each test's own home, and a
real uvicorn on a free 127.0.0.1 port in a thread."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import TINY_ENV, tiny_env_vars
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from sentiment_ops.cli.main import app as cli_app
from sentiment_ops.config import Settings, load_settings
from sentiment_ops.demo.server import free_port
from sentiment_ops.serving import create_app
from sentiment_ops.serving.http_protocol import HeadLimitProtocol


def clean_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Wider-scoped fixtures run before the autouse ``isolated_home``: clear what earlier
    tests may have left (MLflow exports the tracking URI it was last given) and point
    everything at ``home``."""
    for key in list(os.environ):
        if key.startswith(("SENTOPS_", "MLFLOW_TRACKING")) or key == "MLFLOW_REGISTRY_URI":
            mp.delenv(key, raising=False)
    mp.setenv("SENTOPS_HOME", str(home))
    for key, value in TINY_ENV.items():
        mp.setenv(key, value)


@pytest.fixture(scope="session")
def trained_home(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`sentops train` (tiny model) once per session; version 1 registered, not promoted.

    Each test copies ``mlflow.db`` into its own home: the artifacts stay here (absolute
    URIs), so the copies share them read-only and every test can move aliases freely."""
    home = tmp_path_factory.mktemp("serve-home")
    with pytest.MonkeyPatch.context() as mp:
        clean_env(mp, home)
        mp.setenv("SENTOPS_TRAIN__BASE_MODEL", str(tiny_model_dir))
        result = CliRunner().invoke(cli_app, ["train", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {"home": home, **json.loads(result.stdout)}


@pytest.fixture()
def home_with_model(
    trained_home: dict[str, Any], isolated_home: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """This test's home holds a copy of the registry with version 1 (no alias yet)."""
    isolated_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(trained_home["home"] / "mlflow.db", isolated_home / "mlflow.db")
    for key, value in tiny_env_vars(tiny_model_dir).items():
        monkeypatch.setenv(key, value)
    return trained_home


def promote(version: int, alias: str = "production") -> None:
    result = CliRunner().invoke(cli_app, ["promote", "--version", str(version), "--alias", alias])
    assert result.exit_code == 0, result.output


def serve_settings(**serve: Any) -> Settings:
    overrides = {f"serve.{k}": v for k, v in serve.items()}
    overrides.setdefault("serve.poll_interval_s", 0.2)
    # torch skips the per-version ONNX export (the default backend): faster tests. The ONNX
    # path has its own tests, and the fuzz test and the CLI test run the default.
    overrides.setdefault("serve.backend", "torch")
    return load_settings(overrides=overrides)


@dataclass
class Server:
    url: str
    app: Any
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def state(self) -> Any:
        return self.app.state.sentops

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive(), "server did not shut down"


def start_server(settings: Settings, http: type[HeadLimitProtocol] = HeadLimitProtocol) -> Server:
    """A real uvicorn on a free loopback port, in a thread, started and ready to accept, with
    the HTTP protocol `sentops serve` runs."""
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, http=http)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive(), "server failed to start"
        assert time.monotonic() < deadline, "server did not start in time"
        time.sleep(0.05)
    return Server(f"http://127.0.0.1:{port}", app, server, thread)


@pytest.fixture()
def running() -> Iterator[list[Server]]:
    """Servers started by a test; stopped (gracefully) at its end."""
    servers: list[Server] = []
    yield servers
    for s in servers:
        if s.thread.is_alive():
            s.stop()


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def scrape(c: httpx.Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of /metrics: sample name → [(labels, value)]."""
    r = c.get("/metrics")
    assert r.status_code == 200
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def assert_imports_without_torch(imports: str) -> None:
    """Run ``imports`` (Python statements) in a fresh interpreter where ``torch``,
    ``transformers`` and ``onnx`` cannot be imported, as in the serve image: it must exit 0."""
    import subprocess
    import sys

    import sentiment_ops

    code = "import sys\nfor name in ('torch', 'transformers', 'onnx'):\n    sys.modules[name] = None\n"
    code += imports + "\nprint('ok')\n"
    root = Path(sentiment_ops.__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
