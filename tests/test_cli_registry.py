"""train → register → promote → rollback → models, end to end on a real SQLite MLflow."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from sentiment_ops.config import load_settings
from sentiment_ops.tracking.registry import Registry


def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_train_logs_everything_and_registers(cli, trained: dict[str, Any], isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    assert trained["version"] == 1
    m = trained["metrics"]
    for split in ("val", "test", "golden"):
        for metric in ("accuracy", "precision", "recall", "f1", "roc_auc", "loss"):
            assert 0.0 <= m[f"{split}_{metric}"] <= (1.0 if metric != "loss" else 50.0)
    assert m["train_seconds"] > 0
    assert (isolated_home / "mlflow.db").exists()

    registry = Registry(load_settings())
    run = registry.client.get_run(trained["run_id"])
    params = run.data.params
    for key in (
        "base_model",
        "epochs",
        "learning_rate",
        "batch_size",
        "max_length",
        "seed",
        "data",
        "train_size",
        "train_hash",
        "test_hash",
        "golden_hash",
        "git_commit",
        "sentops_version",
    ):
        assert key in params, key
    assert params["train_size"] == "48" and params["test_size"] == "40"
    artifacts = {a.path for a in registry.client.list_artifacts(trained["run_id"])}
    assert {"plots", "reports", "config", "reference"} <= artifacts
    plots = {a.path for a in registry.client.list_artifacts(trained["run_id"], "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/roc_curve.png", "plots/pr_curve.png"}
    info = registry.get_version(1)
    assert info.run_id == trained["run_id"]
    assert info.tags["sentops.data"] == "imdb"
    # lineage as the MLflow UI shows it: run → logged model → version
    model_id = info.source.removeprefix("models:/")  # the SQL registry keeps no model_id column
    logged = registry.client.get_logged_model(model_id)
    assert logged.source_run_id == run.info.run_id and logged.experiment_id == run.info.experiment_id
    assert str(logged.status) in ("READY", "LoggedModelStatus.READY") and logged.name == "model"
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    assert run.info.status == "FINISHED" and run.info.run_name == "train-imdb"


def test_full_alias_lifecycle(cli, trained: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    second = _json(cli("train", "--json", "--seed", "3"))
    assert second["version"] == 2
    third_run = _json(cli("train", "--json", "--no-register", "--seed", "4"))
    assert third_run["version"] is None
    registered = _json(cli("register", "--run-id", third_run["run_id"], "--json"))
    assert registered["version"] == 3

    assert _json(cli("promote", "--version", "1", "--json"))["to_version"] == 1
    assert _json(cli("promote", "--version", "2", "--json"))["from_version"] == 1
    assert _json(cli("promote", "--version", "3", "--json"))["from_version"] == 2

    models = {m["version"]: m for m in _json(cli("models", "--json"))}
    assert models[3]["aliases"] == ["production"]
    assert models[1]["aliases"] == []
    assert models[1]["golden_accuracy"] == pytest.approx(trained["metrics"]["golden_accuracy"])
    assert models[2]["run_id"] == second["run_id"]

    # rollback walks back through history: 3 → 2 → 1, then nothing left
    assert _json(cli("rollback", "--json"))["to_version"] == 2
    assert _json(cli("rollback", "--json"))["to_version"] == 1
    result = cli("rollback")
    assert result.exit_code == 66
    assert "no previous version" in result.stderr
    history = _json(cli("models", "--history", "production", "--json"))
    assert [(e["action"], e["from_version"], e["to_version"]) for e in history] == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("promote", 2, 3),
        ("rollback", 3, 2),
        ("rollback", 2, 1),
    ]
    table = cli("models", env={"COLUMNS": "80"})
    assert table.exit_code == 0 and "production" in table.stdout
    # fits an 80-column terminal: one line per version, the run id as short as git's
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    assert second["run_id"][:8] in table.stdout and second["run_id"] not in table.stdout


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("promote", "--version", "99"), 66, ["model 'sentiment-classifier' version 99", "not found"]),
        (
            ("register", "--run-id", "0123456789abcdef0123456789abcdef"),
            66,
            ["run 0123456789abcdef0123456789abcdef", "not found"],
        ),
        (("rollback",), 66, ["registered model 'sentiment-classifier' does not exist"]),
        # nothing is registered yet: the model is what is missing, before any alias
        (("rollback", "--alias", "staging"), 66, ["registered model 'sentiment-classifier' does not exist"]),
    ],
)
def test_not_found_errors(cli, tiny_env, args: tuple[str, ...], code: int, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    result = cli(*args)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: ")
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_alias_after_training(cli, trained) -> None:  # type: ignore[no-untyped-def]
    result = cli("rollback", "--alias", "staging")
    assert result.exit_code == 66
    assert "staging" in result.stderr


def test_registry_unreachable(cli, tiny_env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    for args in (("models",), ("promote", "--version", "1"), ("train",)):
        result = cli(*args)
        assert result.exit_code == 69, result.output
        assert "unreachable" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


class _HealthOnly(http.server.BaseHTTPRequestHandler):
    """A tracking server's front that answers /health while the API behind it is down."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        return None


def test_models_never_hides_a_failing_registry(cli, tiny_env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A registry whose API fails behind a healthy /health is an error (69), not an empty
    list (nor "model not found": 66 is for a model the registry says it does not have)."""
    assert cli("models").exit_code == 66
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HealthOnly)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.server_address[1]}")
        result = cli("models")
    finally:
        server.shutdown()
        thread.join()
    assert result.exit_code == 69, result.output
    assert "no versions" not in result.stdout and "unreachable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_data_writes_nothing(cli, tiny_env, tmp_path: Path, isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\ngood,1\nbad,sideways\n")
    result = cli("train", "--data", str(bad))
    assert result.exit_code == 65
    assert str(bad) in result.stderr and "row 3" in result.stderr
    assert not (isolated_home / "mlflow.db").exists()  # nothing written to the registry


def test_invalid_config_key(cli, tiny_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lerning_rate: 0.1\n")
    result = cli("--config", str(cfg), "train")
    assert result.exit_code == 2
    assert "unknown setting 'train.lerning_rate'" in result.stderr


def test_train_on_a_user_file(cli, tiny_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = ["text,label"] + [f"sample text number {i} {'great' if i % 2 else 'awful'},{i % 2}" for i in range(40)]
    path = tmp_path / "mine.csv"
    path.write_text("\n".join(rows) + "\n")
    out = _json(cli("train", "--data", str(path), "--json", "--no-register"))
    assert out["data"]["name"] == "mine"
    assert out["data"]["test_size"] == 4 and out["data"]["train_size"] == 32
    assert "golden_accuracy" in out["metrics"]  # always scored on the IMDB golden split too


def test_same_seed_same_model(cli, tiny_env) -> None:  # type: ignore[no-untyped-def]
    a = _json(cli("train", "--json", "--no-register", "--seed", "11"))
    b = _json(cli("train", "--json", "--no-register", "--seed", "11"))
    c = _json(cli("train", "--json", "--no-register", "--seed", "12"))
    assert a["metrics"]["golden_loss"] == pytest.approx(b["metrics"]["golden_loss"], rel=1e-6)
    assert a["metrics"]["golden_loss"] != pytest.approx(c["metrics"]["golden_loss"], rel=1e-6)
