"""The team-server topology of docker-compose.yml, without containers: a throwaway PostgreSQL
set up by the deploy files' init SQL (databases and least-privilege roles) and an ``mlflow
server`` behind MLflow's basic-auth app with proxied artifacts, both on 127.0.0.1, and sentops
pointed at them by environment only (``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``, ``SENTOPS_STORE__URL``), each service as its own users:

    db upgrade     PostgreSQL sentops_owner
    train, drift   PostgreSQL sentops_jobs, MLflow sentops-jobs (made by deploy/mlflow/users.py)
    serve          PostgreSQL sentops_api,  MLflow sentops-api (reads only)

1. train → register → promote → rollback → models through the CLI, checked against what
   landed in PostgreSQL and in the artifact folder.
2. two ``sentops serve`` processes → traffic to both at once → ``sentops drift`` → promote
   and rollback seen by both replicas → every logged row arrives exactly once.
3. a client without credentials, and the API's read-only user, cannot move ``production``;
   the API's database role writes rows but cannot change the schema.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_env_vars
from local_services import (
    ROOT,
    DeployRoles,
    MlflowAuth,
    ServerProcess,
    cli_json,
    provision_roles,
    sql_rows,
    start_mlflow_server,
    start_postgres,
    start_sentops_serve,
)

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    roles: DeployRoles
    mlflow: ServerProcess
    auth: MlflowAuth
    mlflow_db: str
    artifacts: Path
    store_url: str  # as the API's role
    env: dict[str, str]  # what the trainer and the drift check use (sentops-jobs, sentops_jobs)
    api_env: dict[str, str]  # what the API uses (sentops-api, sentops_api)
    v1: dict[str, Any]  # `sentops train --json` (registered as version 1)
    v2_run: dict[str, Any]  # `sentops train --no-register --json`, registered by `sentops register`
    v2: dict[str, Any]


MLFLOW_USERS_SCRIPT = ROOT / "deploy" / "mlflow" / "users.py"


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not (k.startswith(("SENTOPS_", "MLFLOW_")) or k == "PYTHONPATH")}


def sentops(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``sentops`` CLI in its own process (as a user or a container would)."""
    full = {**_clean_environ(), **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "sentiment_ops.cli.main", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
        check=False,
    )


def _ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _mlflow_users(url: str, auth: MlflowAuth) -> dict[str, str]:
    """deploy/mlflow/users.py run as the admin, as Compose's mlflow-users service runs it;
    returns the MLflow password of each sentops user."""
    passwords = {"MLFLOW_API_PASSWORD": secrets.token_urlsafe(18), "MLFLOW_JOBS_PASSWORD": secrets.token_urlsafe(18)}
    env = {**_clean_environ(), **auth.env(), **passwords, "MLFLOW_TRACKING_URI": url}
    result = subprocess.run(
        [sys.executable, str(MLFLOW_USERS_SCRIPT)], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["mlflow-users: sentops-api: created", "mlflow-users: sentops-jobs: created"]
    return {"sentops-api": passwords["MLFLOW_API_PASSWORD"], "sentops-jobs": passwords["MLFLOW_JOBS_PASSWORD"]}


def _as(user: str, password: str, store_url: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password, "SENTOPS_STORE__URL": store_url}


@pytest.fixture(scope="module")
def deploy_db() -> Iterator[DeployRoles]:
    """A cluster of its own, set up by deploy/postgres/init-inference-db.sql (fixed names)."""
    cluster = start_postgres()
    try:
        yield provision_roles(cluster)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def stack(deploy_db: DeployRoles, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """MLflow server (basic auth) on PostgreSQL, and two tiny model versions trained through it."""
    base = tmp_path_factory.mktemp("stack")
    mlflow_db = deploy_db.url("mlflow", "mlflow")
    auth = MlflowAuth(deploy_db.url("mlflow", "mlflow_auth"))
    artifacts = base / "mlartifacts"
    server = start_mlflow_server(mlflow_db, artifacts, base / "mlflow-server.log", auth=auth)
    try:
        users = _mlflow_users(server.url, auth)
        common = {
            **tiny_env_vars(tiny_model_dir),
            "SENTOPS_HOME": str(base / "home"),
            "MLFLOW_TRACKING_URI": server.url,
        }
        owner = {**common, "SENTOPS_STORE__URL": deploy_db.url("sentops_owner", "inference")}
        assert _ok_json(sentops(owner, "db", "upgrade", "--json"))
        store_url = deploy_db.url("sentops_api", "inference")
        env = {**common, **_as("sentops-jobs", users["sentops-jobs"], deploy_db.url("sentops_jobs", "inference"))}
        api_env = {**common, **_as("sentops-api", users["sentops-api"], store_url)}
        v1 = _ok_json(sentops(env, "train", "--json"))
        v2_run = _ok_json(sentops(env, "train", "--json", "--no-register", "--seed", "3"))
        v2 = _ok_json(sentops(env, "register", "--run-id", v2_run["run_id"], "--json"))
        yield Stack(deploy_db, server, auth, mlflow_db, artifacts, store_url, env, api_env, v1, v2_run, v2)
    finally:
        server.stop()


@pytest.fixture()
def stack_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's process (CliRunner) points at the stack by environment only."""
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    return stack.env


def test_train_register_promote_rollback_models(stack: Stack, stack_env: dict[str, str], cli: Any) -> None:
    assert stack.v1["version"] == 1
    assert stack.v2_run["version"] is None and stack.v2["version"] == 2

    # runs, params and the registry live in PostgreSQL ...
    assert sql_rows(stack.mlflow_db, "SELECT count(*) FROM runs")[0][0] == 2
    versions = sql_rows(stack.mlflow_db, "SELECT version, run_id FROM model_versions ORDER BY version")
    assert versions == [(1, stack.v1["run_id"]), (2, stack.v2_run["run_id"])]
    # lineage: each version's source is the logged model of its run, in the run's experiment
    lineage = sql_rows(
        stack.mlflow_db,
        "SELECT m.source_run_id, m.experiment_id = r.experiment_id "
        "FROM model_versions v JOIN logged_models m ON v.source = 'models:/' || m.model_id "
        "JOIN runs r ON r.run_uuid = m.source_run_id ORDER BY v.version",
    )
    assert lineage == [(stack.v1["run_id"], True), (stack.v2_run["run_id"], True)]
    # ... and the artifacts went through the server into its artifact folder
    (art_uri,) = sql_rows(stack.mlflow_db, f"SELECT artifact_uri FROM runs WHERE run_uuid = '{stack.v1['run_id']}'")[0]
    assert art_uri.startswith("mlflow-artifacts:")
    stored = {p.name for p in stack.artifacts.rglob("*") if p.is_file()}
    assert {"MLmodel", "confusion_matrix.png"} <= stored
    assert any("reference" in str(p) for p in stack.artifacts.rglob("*"))

    first = cli_json(cli, "promote", "--version", "1", "--json")
    assert first["to_version"] == 1
    assert cli_json(cli, "promote", "--version", "2", "--json")["from_version"] == 1
    aliases = sql_rows(stack.mlflow_db, "SELECT alias, version FROM registered_model_aliases")
    assert aliases == [("production", 2)]

    assert cli_json(cli, "rollback", "--json")["to_version"] == 1
    models = {m["version"]: m for m in cli_json(cli, "models", "--json")}
    assert models[1]["aliases"] == ["production"] and models[2]["aliases"] == []
    assert models[1]["run_id"] == stack.v1["run_id"]
    assert models[1]["golden_accuracy"] == pytest.approx(stack.v1["metrics"]["golden_accuracy"])
    history = cli_json(cli, "models", "--history", "production", "--json")
    assert [(e["from_version"], e["to_version"]) for e in history][-3:] == [
        (first["from_version"], 1),
        (1, 2),
        (2, 1),
    ]
    # a separate process sees the same state (nothing was local to this one)
    listed = {m["version"]: m["aliases"] for m in _ok_json(sentops(stack.env, "models", "--json"))}
    assert listed == {1: ["production"], 2: []}


# -- serving: two replicas on one store -----------------------------------------------------
def test_two_replicas_drift_and_rollback_every_row_once(
    stack: Stack, stack_env: dict[str, str], cli: Any, tmp_path: Path
) -> None:
    run_replica_scenario(stack, cli, tmp_path)


def _wait_version(servers: list[ServerProcess], version: int, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = [httpx.get(f"{s.url}/model", timeout=5).json().get("version") for s in servers]
        if seen == [version] * len(servers):
            return
        time.sleep(0.3)
    pytest.fail(f"replicas did not all load version {version} (they serve {seen})")


def run_replica_scenario(stack: Stack, cli: Any, tmp_path: Path) -> None:
    """SLOT for issues 3 + 4 (sentops serve, sentops drift): two replicas write to one
    PostgreSQL store at once; drift reads across them; an alias move reaches both."""
    import httpx

    from sentiment_ops.data import load_corpus
    from sentiment_ops.store import InferenceStore

    # the replicas as the API (its MLflow user and database role); nothing else writes
    # predictions to this store, so counts are exact
    store_url = stack.store_url
    assert cli_json(cli, "promote", "--version", "1", "--json")["to_version"] == 1
    env = {**stack.api_env, "SENTOPS_SERVE__POLL_INTERVAL_S": "0.5"}

    servers: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            home = tmp_path / f"replica-{name}"
            servers.append(start_sentops_serve({**env, "SENTOPS_HOME": str(home)}, tmp_path / f"serve-{name}.log"))
        _wait_version(servers, 1)

        tweets = load_corpus("tweets").test.texts[:60]
        clients = [httpx.Client(base_url=s.url, timeout=30) for s in servers]

        def send(i_text: tuple[int, str]) -> tuple[int, dict[str, Any]]:
            i, text = i_text
            response = clients[i % 2].post("/predict", json={"text": text})
            assert response.status_code == 200, response.text
            return i % 2, response.json()

        with ThreadPoolExecutor(max_workers=4) as pool:  # both replicas write at the same time
            answers = list(pool.map(send, enumerate(tweets)))
        batch = clients[1].post("/predict/batch", json={"texts": ["Loved it.", "Dull and far too long."]})
        assert batch.status_code == 200
        answers += [(1, p) for p in batch.json()["predictions"]]
        assert {replica for replica, _ in answers} == {0, 1}
        assert all(p["model"]["version"] == 1 for _, p in answers)

        store = InferenceStore(store_url, create=False)
        deadline = time.monotonic() + 30  # write-behind: rows land shortly after the answers
        while store.count() < len(answers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.count() == len(answers)

        # drift reads the window across both replicas (tweets vs the IMDB reference)
        drift = cli("drift", "--window", "60", "--json")
        assert drift.exit_code == 3, drift.output
        report = json.loads(drift.stdout)
        assert report["n_rows"] == 60 and report["model_version"] == 1
        assert len(store.drift_history(_model_name())) == 1  # recorded in the shared store

        # a promotion and a rollback reach both replicas (they poll the alias)
        assert cli_json(cli, "promote", "--version", "2", "--json")["to_version"] == 2
        _wait_version(servers, 2)
        more = [send((i, f"After the promotion, review {i}.")) for i in range(4)]
        assert all(p["model"]["version"] == 2 for _, p in more)
        answers += more
        assert cli_json(cli, "rollback", "--json")["to_version"] == 1
        _wait_version(servers, 1)
        for c in clients:
            c.close()
    finally:
        codes = [s.stop() for s in servers]  # SIGTERM: drain, flush queued rows, exit
    # uvicorn shuts down gracefully, then re-raises the signal (exit -15, 143 in a container)
    assert set(codes) <= {0, -signal.SIGTERM}, [s.log.read_text()[-2000:] for s in servers]

    # every answered prediction is in the store exactly once, with the version it was served by
    rows = sql_rows(store_url, "SELECT id, model_version, count(*) FROM predictions GROUP BY id, model_version")
    by_id = {r[0]: (r[1], r[2]) for r in rows}
    assert len(rows) == len(answers) == len(by_id)
    for _, p in answers:
        assert by_id[p["id"]] == (p["model"]["version"], 1)


def _model_name() -> str:
    from sentiment_ops.config import load_settings

    return load_settings().mlflow.model_name


# -- who may do what ---------------------------------------------------------------------
def _alias_version(stack: Stack) -> list[tuple[object, ...]]:
    return sql_rows(stack.mlflow_db, "SELECT name, alias, version FROM registered_model_aliases ORDER BY name")


def test_registry_refuses_clients_without_credentials_or_rights(stack: Stack) -> None:
    """Anonymous requests get 401, reading included; the API's user reads but cannot move
    `production` (403); neither changes where it points."""
    import httpx

    assert _ok_json(sentops(stack.env, "promote", "--version", "1", "--json"))["to_version"] == 1
    before = _alias_version(stack)
    ((name, _, _),) = before
    alias = f"{stack.mlflow.url}/api/2.0/mlflow/registered-models/alias"
    move = {"name": name, "alias": "production", "version": "2"}
    assert httpx.get(alias, params={"name": name, "alias": "production"}).status_code == 401
    assert httpx.post(alias, json=move).status_code == 401
    assert httpx.get(f"{stack.mlflow.url}/health").status_code == 200  # probes need no user
    api_user = (stack.api_env["MLFLOW_TRACKING_USERNAME"], stack.api_env["MLFLOW_TRACKING_PASSWORD"])
    assert httpx.get(alias, params={"name": name, "alias": "production"}, auth=api_user).status_code == 200
    assert httpx.post(alias, json=move, auth=api_user).status_code == 403
    # the CLI without credentials: refused with one line, nothing moved
    anonymous = {k: v for k, v in stack.env.items() if not k.startswith("MLFLOW_TRACKING_USER")}
    anonymous.pop("MLFLOW_TRACKING_PASSWORD")
    refused = sentops(anonymous, "promote", "--version", "2")
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert _alias_version(stack) == before


def _execute(url: str, statement: str) -> list[tuple[object, ...]]:
    """One statement in a committed transaction; its rows (with RETURNING)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement))
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_api_role_writes_rows_but_cannot_change_the_schema(stack: Stack) -> None:
    """The init SQL's roles: the API (and the jobs) read and write rows of tables the owner
    made, later ones included (default privileges); only the owner changes the schema."""
    import psycopg
    import sqlalchemy as sa

    from sentiment_ops.store import InferenceStore, PredictionRecord

    roles = stack.roles
    api = InferenceStore(roles.url("sentops_api", "inference"))  # opens: the schema is current
    try:
        record = PredictionRecord("roles-check", 1, "A fine film.", 1, 0.9, 0.9, source="import")
        assert api.add_predictions([record]) == 1
        with api.engine.connect() as conn:
            for ddl in (
                "DROP TABLE predictions",
                "ALTER TABLE predictions ADD COLUMN x integer",
                "TRUNCATE predictions",
                "CREATE TABLE mine (i integer)",
            ):
                with pytest.raises(sa.exc.ProgrammingError, match=r"must be owner|permission denied"):
                    conn.execute(sa.text(ddl))
                conn.rollback()
    finally:
        api.close()
    # a table a later revision adds (as the owner) is the runtime roles' to write too
    owner = roles.url("sentops_owner", "inference")
    _execute(owner, "CREATE TABLE later_revision (id serial PRIMARY KEY, v integer)")
    jobs = roles.url("sentops_jobs", "inference")
    assert _execute(jobs, "INSERT INTO later_revision (v) VALUES (1) RETURNING id") == [(1,)]
    assert _execute(jobs, "DELETE FROM predictions WHERE model_name = 'roles-check' RETURNING model_name") == [
        ("roles-check",)
    ]
    _execute(owner, "DROP TABLE later_revision")
    # no sentops role reaches MLflow's databases
    for role in ("sentops_api", "sentops_jobs", "sentops_owner"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(roles.url(role, "mlflow").replace("postgresql+psycopg", "postgresql")).close()
