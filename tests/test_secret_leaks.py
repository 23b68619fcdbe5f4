"""Secrets never leave the process: ``sentops train`` and ``sentops retrain`` against a
PostgreSQL store whose URL carries a password and an ``mlflow server`` reached through a
tracking URI with ``user:password@`` leave neither password anywhere MLflow keeps: no file
under the server's artifact folder, no param, tag, description or dataset source (read back
through ``MlflowClient``), no row of any table of MLflow's database, no line the CLI printed.

The store's role has a password of its own (not the cluster's, which the mlflow server also
uses), so a find means sentops wrote it. The server has no authentication: it ignores the
basic-auth header that MLflow's REST client sends, made from the tracking URI's user info or
from MLflow's standard ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (also set:
that password must not appear either).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_env_vars
from local_services import PostgresCluster, ServerProcess, sql_rows, start_mlflow_server
from test_integration_postgres import sentops

from sentiment_ops.data import load_corpus
from sentiment_ops.store import InferenceStore, PredictionRecord

pytestmark = pytest.mark.integration

MODEL = "sentiment-classifier"


@dataclass
class Leaks:
    store_password: str
    tracking_password: str
    env_password: str  # MLFLOW_TRACKING_PASSWORD
    store_url: str
    mlflow_db: str
    server: ServerProcess
    artifacts: Path
    outputs: list[str]  # stdout and stderr of every sentops command

    @property
    def secrets(self) -> tuple[str, str, str]:
        return self.store_password, self.tracking_password, self.env_password

    def found_in(self, text: str) -> list[str]:
        return [s for s in self.secrets if s in text]


def _store_role(cluster: PostgresCluster, password: str) -> str:
    """A database owned by a new login role with ``password``: its SQLAlchemy URL."""
    import psycopg

    role, db = f"app_{secrets.token_hex(4)}", f"store_{secrets.token_hex(4)}"
    conninfo = f"host=127.0.0.1 port={cluster.port} user={cluster.user} password={cluster.password} dbname=postgres"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")  # names and password: hex only
        conn.execute(f"CREATE DATABASE {db} OWNER {role}")
    return f"postgresql+psycopg://{role}:{password}@127.0.0.1:{cluster.port}/{db}"


def _log_labeled_tweets(store_url: str, n: int) -> None:
    """``n`` served tweets of version 1, each then labeled by a person."""
    tweets = load_corpus("tweets").train
    store = InferenceStore(store_url)
    try:
        recs = [
            PredictionRecord(
                model_name=MODEL,
                model_version=1,
                text=tweets.texts[i],
                prediction=int(tweets.labels[i]),
                probability=0.9 if tweets.labels[i] else 0.1,
                confidence=0.9,
            )
            for i in range(n)
        ]
        store.add_predictions(recs)
        for rec, label in zip(recs, tweets.labels[:n], strict=True):
            assert store.set_feedback(rec.id, int(label))
    finally:
        store.close()


def _run(env: dict[str, str], outputs: list[str], *args: str) -> Any:
    result = sentops(env, "--verbose", *args)
    outputs += [result.stdout, result.stderr]
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def leaks(
    postgres_cluster: PostgresCluster, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Leaks]:
    base = tmp_path_factory.mktemp("leaks")
    store_password, tracking_password = f"S3cretPw{secrets.token_hex(6)}", f"TrackPw{secrets.token_hex(6)}"
    env_password = f"EnvPw{secrets.token_hex(6)}"
    store_url = _store_role(postgres_cluster, store_password)
    mlflow_db = postgres_cluster.create_database(f"mlflow_{secrets.token_hex(4)}")
    artifacts = base / "mlartifacts"
    server = start_mlflow_server(mlflow_db, artifacts, base / "mlflow-server.log")
    outputs: list[str] = []
    try:
        env = {
            **tiny_env_vars(tiny_model_dir),
            "SENTOPS_HOME": str(base / "home"),
            "MLFLOW_TRACKING_URI": server.url.replace("http://", f"http://someuser:{tracking_password}@"),
            "MLFLOW_TRACKING_USERNAME": "someuser",
            "MLFLOW_TRACKING_PASSWORD": env_password,
            "SENTOPS_STORE__URL": store_url,
            "SENTOPS_RETRAIN__MIN_LABELS": "20",
            "SENTOPS_RETRAIN__GOLDEN_SAMPLES": "40",
        }
        trained = _run(env, outputs, "train", "--promote", "--json")
        assert trained["version"] == 1
        _log_labeled_tweets(store_url, 70)
        retrained = _run(env, outputs, "retrain", "--window", "60", "--json")
        assert retrained["version"] == 2 and retrained["parent_version"] == 1
        yield Leaks(store_password, tracking_password, env_password, store_url, mlflow_db, server, artifacts, outputs)
    finally:
        server.stop()


def test_no_password_in_any_artifact_file(leaks: Leaks) -> None:
    files = [p for p in leaks.artifacts.rglob("*") if p.is_file()]
    assert any(p.name == "resolved_config.yaml" for p in files)  # the settings are logged ...
    assert any(p.name == "comparison.json" for p in files)
    found = {str(p.relative_to(leaks.artifacts)): leaks.found_in(p.read_bytes().decode("latin-1")) for p in files}
    assert {k: v for k, v in found.items() if v} == {}  # ... without either password
    config = next(p for p in files if p.name == "resolved_config.yaml").read_text()
    assert "postgresql+psycopg://" in config and "someuser:***@127.0.0.1" in config


def test_no_password_in_params_tags_or_descriptions(leaks: Leaks) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=leaks.server.url)  # the server itself needs no credentials
    texts: list[str] = []
    experiments = client.search_experiments()
    texts += [json.dumps([e.name, e.artifact_location, e.tags]) for e in experiments]
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert {r.data.tags["sentops.kind"] for r in runs} >= {"train", "retrain"}
    for listed in runs:
        run = client.get_run(listed.info.run_id)
        texts.append(json.dumps([run.info.run_name, run.info.artifact_uri, run.data.params, run.data.tags]))
        texts += [json.dumps([d.dataset.source, d.dataset.profile]) for d in run.inputs.dataset_inputs]
    models = client.search_logged_models([e.experiment_id for e in experiments])
    assert models
    texts += [json.dumps([m.params, m.tags, m.artifact_location]) for m in models]
    registered = client.get_registered_model(MODEL)
    texts.append(json.dumps([registered.description, registered.tags]))
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert {int(v.version) for v in versions} == {1, 2}
    for listed in versions:
        mv = client.get_model_version(MODEL, listed.version)
        texts.append(json.dumps([mv.description, mv.tags, mv.source]))
    assert [t for t in texts if leaks.found_in(t)] == []
    params = " ".join(texts)
    assert "golden_hash" in params and "Retrained by `sentops retrain`" in params  # params and descriptions read


def test_no_password_in_any_row_of_mlflow_database(leaks: Leaks) -> None:
    tables = [r[0] for r in sql_rows(leaks.mlflow_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert {"runs", "params", "tags", "model_versions", "logged_models"} <= set(tables)
    found = {}
    for table in tables:
        rows = sql_rows(leaks.mlflow_db, f'SELECT t::text FROM "{table}" t')  # table names from the catalog
        hits = [row[0] for row in rows if leaks.found_in(str(row[0]))]
        if hits:
            found[table] = hits[:3]
    assert found == {}


def test_no_password_in_what_the_cli_printed(leaks: Leaks) -> None:
    printed = "\n".join(leaks.outputs)
    assert '"version": 2' in printed
    assert [line for line in printed.splitlines() if leaks.found_in(line)] == []


def test_tracking_uri_with_user_info_reaches_the_server(leaks: Leaks) -> None:
    """MLflow's REST client accepts ``http://user:password@host``: the runs above landed."""
    assert sql_rows(leaks.mlflow_db, "SELECT count(*) FROM runs")[0][0] == 2
