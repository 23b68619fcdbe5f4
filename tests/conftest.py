"""Test fixtures: every test gets its own sentops home (MLflow SQLite, artifacts, store),
and a tiny randomly initialised BERT built from a config with the bundled tokenizer."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sentiment_ops.cli.common import quiet_third_party
from sentiment_ops.cli.main import app
from sentiment_ops.config import Settings, load_settings

quiet_third_party()

pytest_plugins = ["serve_support"]  # fixtures of the serving tests (tests/serve_support.py)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for key in list(os.environ):
        if key.startswith("SENTOPS_") or key.startswith("MLFLOW_TRACKING") or key == "MLFLOW_REGISTRY_URI":
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("SENTOPS_HOME", str(home))
    yield home


@pytest.fixture()
def plain_mlflow(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """MLflow's own API (``mlflow.pyfunc.load_model("models:/…")``) pointed at this test's
    home the way a user points it: ``MLFLOW_TRACKING_URI``. sentops never sets MLflow's
    global URIs, so tests that go through plain MLflow ask for this."""
    uri = load_settings().tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and the bundled MiniLM tokenizer."""
    from sentiment_ops.modeling import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


# Small data for every sentops command in tests (the tiny model's path is added per session).
TINY_ENV = {
    "SENTOPS_TRAIN__MAX_SAMPLES": "48",
    "SENTOPS_TRAIN__EVAL_SAMPLES": "40",
    "SENTOPS_TRAIN__VAL_SAMPLES": "24",
    "SENTOPS_TRAIN__MAX_LENGTH": "64",
    "SENTOPS_TRAIN__BATCH_SIZE": "16",
    "SENTOPS_TRAIN__REFERENCE_SAMPLES": "40",
    "SENTOPS_DRIFT__REFERENCE_SAMPLES": "40",
    "SENTOPS_DRIFT__CALIBRATION_SAMPLES": "200",
    "SENTOPS_TRAIN__LEARNING_RATE": "0.001",
}


def tiny_env_vars(tiny_model_dir: Path) -> dict[str, str]:
    """Environment that makes every sentops command use the tiny model and small data
    (also for sentops processes that tests start: tests/test_integration_postgres.py)."""
    return {"SENTOPS_TRAIN__BASE_MODEL": str(tiny_model_dir), **TINY_ENV}


@pytest.fixture()
def tiny_env(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment that makes every sentops command use the tiny model and small data."""
    env = tiny_env_vars(tiny_model_dir)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture()
def settings(tiny_env: dict[str, str]) -> Settings:
    return load_settings()


@pytest.fixture()
def cli() -> Callable[..., Any]:
    runner = CliRunner()

    def invoke(*args: str, **kw: Any) -> Any:
        return runner.invoke(app, list(args), catch_exceptions=False, **kw)

    return invoke


@pytest.fixture()
def trained(cli: Callable[..., Any], tiny_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """One tiny model trained and registered (version 1) in this test's home."""
    import json

    result = cli("train", "--json")
    assert result.exit_code == 0, result.output
    yield json.loads(result.stdout)


THREE_CLASSES = ("negative", "neutral", "positive")
_CLASS_WORDS = {
    "negative": ("awful", "terrible", "boring", "hated", "worst"),
    "neutral": ("arrived", "tuesday", "station", "schedule", "update"),
    "positive": ("wonderful", "loved", "brilliant", "great", "best"),
}


def write_three_class_csv(path: Path, rows: int = 240, seed: int = 0) -> Path:
    """A CSV of ``rows`` short texts labeled negative / neutral / positive (each class its
    own words, so even the tiny model learns them a little)."""
    import csv
    import random

    rng = random.Random(seed)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["text", "label"])
        for i in range(rows):
            label = THREE_CLASSES[i % 3]
            words = [rng.choice(_CLASS_WORDS[label]) for _ in range(4)] + ["the", "service", str(i)]
            rng.shuffle(words)
            out.writerow([" ".join(words), label])
    return path


@pytest.fixture()
def trained3(cli: Callable[..., Any], tiny_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """One tiny negative / neutral / positive model trained on ``write_three_class_csv``
    data and registered (version 1) in this test's home; ``data`` is the CSV's path."""
    import json

    data = write_three_class_csv(tmp_path / "three.csv")
    result = cli("train", "--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    yield {**json.loads(result.stdout), "data": str(data)}


# -- PostgreSQL for the integration tests (tests/local_services.py) ---------------------------
@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL on a free 127.0.0.1 port (skipped where none is installed,
    installed by scripts/ci_services.sh under CI); stopped by PID at the end of the session."""
    from local_services import start_postgres

    cluster = start_postgres()
    yield cluster
    cluster.stop()


@pytest.fixture()
def pg_url(postgres_cluster: Any) -> str:
    """A new empty database in the throwaway cluster: its ``postgresql+psycopg://`` URL."""
    return str(postgres_cluster.create_database("t_" + uuid.uuid4().hex[:12]))
