"""The inference store upgrades in place (issue 18), on SQLite and on a real PostgreSQL.

A store made by sentops 0.1.0 (``create_all`` of the tables below, frozen as they were, with
no version table) holding predictions with embeddings, labels and drift checks: every
command that opens it refuses with one line naming ``sentops db upgrade``; the upgrade
keeps every row and label, old rows get ``backend`` NULL (unknown: left out of drift);
the migrated schema equals the one a new store is created with."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from sentiment_ops import migrations
from sentiment_ops.errors import StoreSchemaError
from sentiment_ops.store import InferenceStore, PredictionRecord, metadata

# -- sentops 0.1.0's tables, frozen (sentiment_ops/store.py on main before migrations) ----------------------
OLD = sa.MetaData()
OLD_PREDICTIONS = sa.Table(
    "predictions",
    OLD,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("alias", sa.String(100), nullable=True),
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("text_hash", sa.String(64), nullable=False),
    sa.Column("prediction", sa.Integer, nullable=True),
    sa.Column("probability", sa.Float, nullable=True),
    sa.Column("confidence", sa.Float, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("embedding", sa.LargeBinary, nullable=True),
    sa.Column("source", sa.String(20), nullable=False, server_default="api"),
    sa.Column("feedback_label", sa.Integer, nullable=True),
    sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_predictions_model", "model_name", "model_version", "created_at"),
)
OLD_DRIFT_CHECKS = sa.Table(
    "drift_checks",
    OLD,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("window", sa.Integer, nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("drift", sa.Boolean, nullable=False),
    sa.Column("p_value", sa.Float, nullable=True),
    sa.Column("mmd2", sa.Float, nullable=True),
    sa.Column("cosine_distance", sa.Float, nullable=True),
    sa.Column("details", sa.Text, nullable=True),
)
N_ROWS = 300


def _old_store(url: str) -> list[dict[str, Any]]:
    """A 0.1.0 store with N_ROWS predictions (every 3rd labeled, every 10th imported) and
    two drift checks; returns the prediction rows as written."""
    engine = sa.create_engine(url)
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    rows = [
        {
            "id": f"{i:032x}",
            "created_at": t0 + timedelta(minutes=i),
            "model_name": "sentiment-classifier",
            "model_version": 1 + i // 200,
            "alias": "production",
            "text": f"review {i} \t with a tab",
            "text_hash": f"{i:064x}",
            "prediction": i % 2,
            "probability": i / N_ROWS,
            "confidence": 0.5 + (i % 50) / 100,
            "latency_ms": 1.0 + i,
            "embedding": np.arange(384, dtype=np.float32).__add__(i).tobytes(),
            "source": "import" if i % 10 == 0 else "api",
            "feedback_label": (i // 3) % 2 if i % 3 == 0 else None,
            "feedback_at": t0 + timedelta(days=1) if i % 3 == 0 else None,
        }
        for i in range(N_ROWS)
    ]
    with engine.begin() as conn:
        OLD.create_all(conn)
        conn.execute(OLD_PREDICTIONS.insert(), rows)
        for k in range(2):
            report = {"window": 100, "n_rows": 100, "drift": bool(k), "p_value": 0.3 / (k + 1)}
            conn.execute(
                OLD_DRIFT_CHECKS.insert().values(
                    created_at=t0 + timedelta(hours=k),
                    model_name="sentiment-classifier",
                    model_version=1,
                    window=100,
                    n_rows=100,
                    drift=bool(k),
                    p_value=report["p_value"],
                    mmd2=0.01,
                    cosine_distance=0.02,
                    details=json.dumps(report),
                )
            )
    engine.dispose()
    return rows


def _store_urls(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inference.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = _store_urls(request, tmp_path)
    monkeypatch.setenv("SENTOPS_STORE__URL", url)
    return url


def test_old_store_is_refused_then_upgraded_keeping_every_row(store_url: str, cli: Callable[..., Any]) -> None:
    rows = _old_store(store_url)

    with pytest.raises(StoreSchemaError) as err:
        InferenceStore(store_url)
    safe = sa.engine.make_url(store_url).render_as_string(hide_password=True)
    assert str(err.value) == (
        f"inference store {safe} is at schema 0001, this sentops needs 0005: run `sentops db upgrade`"
    )
    # every command that opens the store says the same, in one line, exit 70 (store error)
    for args in (("feedback", "export", "out.csv"), ("drift", "--history"), ("serve", "--port", "0")):
        result = cli(*args)
        assert result.exit_code == 70, (args, result.output)
        assert "run `sentops db upgrade`" in result.output and "Traceback" not in result.output

    current = cli("db", "current", "--json")
    assert current.exit_code == 0, current.output
    assert json.loads(current.stdout) | {"url": None} == {
        "url": None,
        "current": "0001",
        "head": "0005",
        "up_to_date": False,
        "state": "behind: run `sentops db upgrade`",
    }
    upgraded = cli("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert "upgraded from schema 0001 to 0005" in upgraded.output
    assert "already at schema 0005" in cli("db", "upgrade").output
    assert json.loads(cli("db", "current", "--json").stdout)["up_to_date"] is True

    store = InferenceStore(store_url)  # opens now
    got = {r.id: r for r in store.rows()}
    assert len(got) == N_ROWS == store.count()
    for row in rows:
        rec = got[row["id"]]
        assert (rec.text, rec.prediction, rec.source, rec.feedback_label) == (
            row["text"],
            row["prediction"],
            row["source"],
            row["feedback_label"],
        )
        assert rec.created_at == row["created_at"] and rec.probability == pytest.approx(row["probability"])
        assert rec.embedding is not None and rec.embedding.tobytes() == row["embedding"]
        assert rec.backend is None  # unknown embedding space: never in a drift window
        assert rec.request_id is None  # served before request ids were stored
        assert rec.probabilities is None  # served before every class's probability was stored
    assert len(store.rows(labeled=True)) == sum(r["feedback_label"] is not None for r in rows) == 100
    assert [h["p_value"] for h in store.drift_history("sentiment-classifier")] == [0.3, 0.15]
    assert store.window("sentiment-classifier", 1, 500, backend="onnx") == []
    assert store.backend_counts("sentiment-classifier", 1, 500) == {None: 180}
    assert store.dead_letters() == []
    # a row served after the upgrade keeps every class's probability
    new = PredictionRecord("sentiment-classifier", 2, "after", 1, None, 0.5, probabilities=[0.25, 0.5, 0.25])
    store.add_predictions([new])
    assert store.get(new.id).probabilities == [0.25, 0.5, 0.25]
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name == migrations.VERSION_TABLE)] == []
    store.close()


def test_new_store_is_created_at_head(store_url: str, cli: Callable[..., Any]) -> None:
    assert json.loads(cli("db", "current", "--json").stdout)["current"] is None
    store = InferenceStore(store_url)
    assert store.schema_revision() == migrations.head() == "0005"
    with store.engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT version_num FROM {migrations.VERSION_TABLE}")).scalar_one() == "0005"
    store.close()
    assert "up to date" in cli("db", "current").output


def test_a_store_newer_than_this_sentops_is_refused(store_url: str) -> None:
    InferenceStore(store_url).close()
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(StoreSchemaError, match=r"at schema 0099, newer than this sentops knows .*upgrade sentops"):
        InferenceStore(store_url)


def test_upgrade_runs_revision_by_revision_from_0001(tmp_path: Path) -> None:
    """Revision 0001 alone builds exactly the 0.1.0 schema; the later ones add what they add,
    one at a time (a store at 0002 goes through 0003, ``predictions.request_id`` and its
    index, and on to 0005, ``predictions.probabilities``)."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        migrations.upgrade(conn, "0001")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), OLD)
        assert migrations.current(conn) == "0001"
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name == migrations.VERSION_TABLE)] == []
    engine.dispose()
    with engine.begin() as conn:
        migrations.upgrade(conn, "0002")
    with engine.connect() as conn:
        assert "request_id" not in {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
    engine.dispose()
    before, after = InferenceStore(url, create=False).upgrade_schema()
    assert (before, after) == ("0002", "0005")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        columns = {c["name"]: c["nullable"] for c in inspector.get_columns("predictions")}
        assert columns["request_id"] is True and columns["probabilities"] is True
        assert {"name": "ix_predictions_request_id", "column_names": ["request_id"]}.items() <= next(
            i for i in inspector.get_indexes("predictions") if i["name"] == "ix_predictions_request_id"
        ).items()
    engine.dispose()


@pytest.mark.integration
def test_concurrent_upgrades_on_postgres_migrate_once(pg_url: str) -> None:
    """Two `sentops db upgrade` at once (two operators, two CI jobs): the advisory lock lets
    one migrate; the other waits, finds the store at head, and changes nothing."""
    from concurrent.futures import ThreadPoolExecutor

    _old_store(pg_url)
    stores = [InferenceStore(pg_url, create=False) for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda s: s.upgrade_schema(), stores))
    assert sorted(results, key=str) == sorted([("0001", "0005"), ("0005", "0005"), ("0005", "0005")], key=str)
    for s in stores:
        s.close()
    store = InferenceStore(pg_url)
    assert store.count() == N_ROWS and store.schema_revision() == "0005"
    store.close()
