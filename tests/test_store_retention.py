"""Retention of the inference store (issue 32), on SQLite and on a real PostgreSQL.

A store with predictions of many ages (some labeled: served rows labeled through feedback,
and imported labeled texts), dead letters and drift checks: ``prune`` deletes what is older
than the retention in transactions of at most ``batch_size`` rows, keeps labeled predictions
unless asked, counts without deleting on a dry run; ``sentops db prune`` does the same from
the command line. Revision 0004 indexes what the store looks up, and the lookups use it."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from sentiment_ops import migrations
from sentiment_ops.errors import ConfigError
from sentiment_ops.store import InferenceStore, PredictionRecord, records_from, utcnow
from sentiment_ops.store.schema import dead_letters, drift_checks

OLD_UNLABELED = 40  # older than the retention, no label: pruned
OLD_LABELED = 6  # older, labeled: kept unless include_labeled
RECENT = 10  # within the retention: kept
DAYS = 30


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'inference.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    monkeypatch.setenv("SENTOPS_STORE__URL", url)
    return str(url)


@pytest.fixture()
def store(store_url: str) -> Iterator[InferenceStore]:
    s = InferenceStore(store_url)
    yield s
    s.close()


def _served(i: int, at: datetime) -> PredictionRecord:
    return PredictionRecord(
        model_name="m",
        model_version=1,
        text=f"served text {i}",
        prediction=i % 2,
        probability=0.7,
        confidence=0.7,
        embedding=np.full(8, i, dtype=np.float32),
        backend="onnx",
        created_at=at,
    )


def _seed(store: InferenceStore, now: datetime) -> dict[str, set[str]]:
    """Rows 31-70 days old (some labeled), rows 0-9 days old (one labeled), and 3 old plus
    1 new dead letters and drift checks. Returns the ids of each kind of prediction."""
    old = [_served(i, now - timedelta(days=DAYS + 1 + i)) for i in range(OLD_UNLABELED + 4)]
    recent = [_served(100 + i, now - timedelta(days=i, hours=1)) for i in range(RECENT)]
    imported = records_from(["an imported text", "another"], [1, 0], "m")
    for k, rec in enumerate(imported):
        rec.created_at = now - timedelta(days=DAYS + 5 + k)
    for rec in [old[3], old[17], old[30]]:  # served rows people labeled afterwards
        rec.feedback_label, rec.feedback_at = 1, now
    store.add_predictions(old + recent + imported)
    assert store.set_feedback(old[42].id, 0)  # through the store's own path, as /feedback does
    assert store.set_feedback(recent[4].id, 1)
    labeled = {r.id for r in (old[3], old[17], old[30], old[42], *imported)}
    assert len(labeled) == OLD_LABELED
    with store.engine.begin() as conn:
        for age in (DAYS + 1, DAYS + 40, DAYS + 90, 1):
            at = now - timedelta(days=age)
            letter = {"id": f"dl{age}", "created_at": at, "kind": "prediction", "error": "e", "payload": "{}"}
            conn.execute(dead_letters.insert().values(**letter))
            conn.execute(
                drift_checks.insert().values(
                    created_at=at, model_name="m", model_version=1, window=10, n_rows=10, drift=False, details="{}"
                )
            )
    return {
        "old_unlabeled": {r.id for r in old} - labeled,
        "labeled": labeled,
        "recent": {r.id for r in recent},
    }


def _ids(store: InferenceStore) -> set[str]:
    with store.engine.connect() as conn:
        return set(conn.execute(sa.select(sa.text("id")).select_from(sa.table("predictions"))).scalars())


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def test_prune_deletes_old_unlabeled_rows_in_bounded_batches(store: InferenceStore, store_url: str) -> None:
    now = utcnow()
    ids = _seed(store, now)
    # watch the real engine: the rows left before each DELETE (read on another connection),
    # and every commit; one DELETE per transaction, each of at most batch_size rows
    before_delete: list[tuple[str, int]] = []
    commits: list[int] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM"):
            table = statement.split()[2]
            before_delete.append((table, _count(store_url, table)))

    sa.event.listen(store.engine, "before_cursor_execute", on_execute)
    sa.event.listen(store.engine, "commit", lambda conn: commits.append(1))
    result = store.prune(DAYS, batch_size=7, now=now)
    sa.event.remove(store.engine, "before_cursor_execute", on_execute)

    assert (result.predictions, result.labeled_kept, result.dead_letters, result.drift_checks) == (
        OLD_UNLABELED,
        OLD_LABELED,
        3,
        3,
    )
    assert _ids(store) == ids["labeled"] | ids["recent"]  # the old unlabeled rows, and only they, are gone
    assert store.get(next(iter(ids["labeled"]))).feedback_label is not None
    assert _count(store_url, "dead_letters") == 1 and _count(store_url, "drift_checks") == 1
    assert result.before == now - timedelta(days=DAYS) and result.deleted == OLD_UNLABELED + 6

    left = [n for table, n in before_delete if table == "predictions"] + [store.count()]
    per_batch = [a - b for a, b in itertools.pairwise(left)]
    assert per_batch == [7, 7, 7, 7, 7, 5]  # 40 rows in batches of at most 7, oldest first
    assert result.batches == math.ceil(OLD_UNLABELED / 7) + 2 == len(commits)

    again = store.prune(DAYS, batch_size=7, now=now)
    assert (again.deleted, again.batches, again.labeled_kept) == (0, 0, OLD_LABELED)


def test_dry_run_counts_and_deletes_nothing(store: InferenceStore, store_url: str) -> None:
    now = utcnow()
    ids = _seed(store, now)
    everything = _ids(store)
    dry = store.prune(DAYS, dry_run=True, now=now)
    assert dry.dry_run and dry.batches == 0
    assert (dry.predictions, dry.labeled_kept, dry.dead_letters, dry.drift_checks) == (OLD_UNLABELED, OLD_LABELED, 3, 3)
    assert _ids(store) == everything and _count(store_url, "dead_letters") == 4
    real = store.prune(DAYS, now=now)
    assert (real.predictions, real.dead_letters, real.drift_checks) == (dry.predictions, 3, 3)
    assert _ids(store) == ids["labeled"] | ids["recent"]


def test_include_labeled_deletes_old_labeled_rows_too(store: InferenceStore) -> None:
    now = utcnow()
    ids = _seed(store, now)
    result = store.prune(DAYS, include_labeled=True, now=now)
    assert (result.predictions, result.labeled_kept) == (OLD_UNLABELED + OLD_LABELED, 0)
    assert _ids(store) == ids["recent"]  # the recent labeled row stays: it is within the retention
    assert len(store.rows(labeled=True)) == 1


@pytest.mark.parametrize(("days", "batch"), [(0, 10), (30, 0)])
def test_prune_refuses_a_retention_or_batch_below_one(store: InferenceStore, days: int, batch: int) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        store.prune(days, batch_size=batch)


def test_db_prune_command(store: InferenceStore, store_url: str, cli: Callable[..., Any], monkeypatch: Any) -> None:
    ids = _seed(store, utcnow())

    refused = cli("db", "prune")
    assert refused.exit_code == 2
    assert "no retention set: pass --days N or set store.retention_days" in refused.output
    assert "Traceback" not in refused.output

    monkeypatch.setenv("SENTOPS_STORE__RETENTION_DAYS", "200")  # nothing that old
    dry = cli("db", "prune", "--days", str(DAYS), "--dry-run")  # --days overrides the setting
    assert dry.exit_code == 0, dry.output
    assert f"would delete {OLD_UNLABELED} predictions, 3 dead letters and 3 drift checks older than {DAYS} days" in (
        " ".join(dry.output.split())
    )
    assert f"{OLD_LABELED} older labeled predictions kept" in " ".join(dry.output.split())
    assert len(_ids(store)) == OLD_UNLABELED + OLD_LABELED + RECENT

    assert json.loads(cli("db", "prune", "--json").stdout)["deleted"] == 0  # the setting: 200 days
    monkeypatch.setenv("SENTOPS_STORE__RETENTION_DAYS", str(DAYS))
    out = cli("db", "prune", "--json", "--batch-size", "9")
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert {k: got[k] for k in ("days", "dry_run", "predictions", "labeled_kept", "dead_letters", "drift_checks")} == {
        "days": DAYS,
        "dry_run": False,
        "predictions": OLD_UNLABELED,
        "labeled_kept": OLD_LABELED,
        "dead_letters": 3,
        "drift_checks": 3,
    }
    assert got["batches"] == math.ceil(OLD_UNLABELED / 9) + 2 and got["deleted"] == OLD_UNLABELED + 6
    assert _ids(store) == ids["labeled"] | ids["recent"]

    everything = cli("db", "prune", "--include-labelled", "--json")  # either spelling
    assert json.loads(everything.stdout)["predictions"] == OLD_LABELED
    assert _ids(store) == ids["recent"]


def test_bad_retention_setting_is_one_line(cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTOPS_STORE__RETENTION_DAYS", "0")
    result = cli("db", "prune")
    assert result.exit_code == 2 and "store.retention_days" in result.output and "Traceback" not in result.output


# -- the indexes of revision 0004 ----------------------------------------------------------------------------


def _indexes(url: str) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {i["name"]: i for i in sa.inspect(conn).get_indexes("predictions") if i["name"]}
    finally:
        engine.dispose()


def test_upgrade_from_0003_adds_the_lookup_indexes(store_url: str) -> None:
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        migrations.upgrade(conn, "0003")
    engine.dispose()
    assert "ix_predictions_text_hash" not in _indexes(store_url)
    before, after = InferenceStore(store_url, create=False).upgrade_schema()
    assert (before, after) == ("0003", migrations.head())
    got = _indexes(store_url)
    assert got["ix_predictions_text_hash"]["column_names"] == ["text_hash"]
    labeled = got["ix_predictions_labeled"]
    assert labeled["column_names"] == ["created_at", "id"]
    where = next(v for k, v in labeled["dialect_options"].items() if k.endswith("_where"))
    assert " ".join(str(where).replace("(", " ").replace(")", " ").split()).lower() == "feedback_label is not null"
    # a store created new holds the same indexes
    fresh = store_url.replace("inference.db", "fresh.db") if store_url.startswith("sqlite") else None
    if fresh is not None:
        InferenceStore(fresh).close()
        assert {n: i["column_names"] for n, i in _indexes(fresh).items()} == {
            n: i["column_names"] for n, i in got.items()
        }


def _plan(store: InferenceStore, call: Callable[[], Any]) -> str:
    """The query plan of the statement ``call`` sends (captured from the real engine)."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", capture)
    call()
    sa.event.remove(store.engine, "before_cursor_execute", capture)
    statement, parameters = sent[-1]
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        if store.engine.dialect.name == "postgresql":
            cur.execute("SET enable_seqscan = off")  # a tiny table: ask whether an index could serve it
            cur.execute("EXPLAIN " + statement, parameters)
        else:
            cur.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        return "\n".join(str(row) for row in cur.fetchall())
    finally:
        raw.close()


def test_lookups_use_the_indexes(store: InferenceStore) -> None:
    ids = _seed(store, utcnow())
    hashes = [f"{i:064x}" for i in range(5)]
    assert "ix_predictions_text_hash" in _plan(store, lambda: store.imported_labels(hashes))
    assert "ix_predictions_text_hash" in _plan(store, lambda: store.labeled_hashes(hashes))
    assert "ix_predictions_labeled" in _plan(store, lambda: store.rows(labeled=True))
    assert len(store.rows(labeled=True)) == len(ids["labeled"]) + 1
