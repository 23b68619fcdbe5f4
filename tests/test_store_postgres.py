"""The inference store on a real PostgreSQL: every method, the URL forms, and several
processes writing at once (as API replicas do) while another reads."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from sentiment_ops.errors import NotFoundError, StoreError
from sentiment_ops.store import InferenceStore, PredictionRecord, normalize_url, records_from


def _record(i: int, version: int = 1, **kw: Any) -> PredictionRecord:
    return PredictionRecord(
        model_name="m",
        model_version=version,
        text=f"text {i}",
        prediction=i % 2,
        probability=0.25 + 0.5 * (i % 2),
        confidence=0.75,
        embedding=np.arange(8, dtype=np.float32) + i,
        latency_ms=1.5,
        alias="production",
        **kw,
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("not a url", "not a url"),
    ],
)
def test_normalize_url_keeps_explicit_urls(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


def test_normalize_url_maps_driverless_postgres_urls() -> None:
    import importlib.util

    want = "postgresql" if importlib.util.find_spec("psycopg2") else "postgresql+psycopg"
    assert normalize_url("postgresql://u:p%40ss@h/db") == f"{want}://u:p%40ss@h/db"
    assert normalize_url("postgres://u@h:6543/db") == f"{want}://u@h:6543/db"


def test_unreachable_postgres_is_one_clear_error_without_the_password() -> None:
    with pytest.raises(StoreError) as err:
        InferenceStore("postgresql+psycopg://u:hunter2@127.0.0.1:1/db")
    assert "cannot open inference store" in str(err.value)
    assert "hunter2" not in str(err.value)


@pytest.mark.integration
def test_every_store_method_on_postgres(pg_url: str) -> None:
    store = InferenceStore(pg_url)
    assert store.engine.dialect.name == "postgresql"
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    records = [_record(i, created_at=t0 + timedelta(seconds=i)) for i in range(6)]
    records.append(_record(99, version=2, created_at=t0 + timedelta(seconds=30)))
    assert store.add_predictions(records) == 7
    got = store.get(records[3].id)
    assert got.text == "text 3" and got.created_at == records[3].created_at
    assert got.created_at.tzinfo is not None
    np.testing.assert_array_equal(got.embedding, records[3].embedding)
    assert store.count() == 7 and store.count("m", 1) == 6 and store.count("m", 2) == 1

    window = store.window("m", 1, 4)
    assert [r.id for r in window] == [r.id for r in records[2:6]]  # newest 4, oldest first

    assert store.set_feedback(records[0].id, 1) is True
    assert store.set_feedback(records[0].id, 1) is False
    with pytest.raises(NotFoundError):
        store.set_feedback("nope", 1)
    store.add_predictions(records_from(["imported"], [0], "m"))
    assert [r.feedback_label for r in store.rows(labeled=True)] == [1, 0]  # oldest first
    assert [r.id for r in store.rows(labeled=False)] == [r.id for r in records[1:]]
    assert len(store.rows()) == 8

    check_id = store.record_drift_check("m", 1, {"window": 4, "n_rows": 4, "drift": True, "p_value": 0.002})
    (check,) = store.drift_history("m")
    assert check["id"] == check_id and check["drift"] is True and check["details"]["p_value"] == 0.002

    with pytest.raises(StoreError, match="cannot write"):
        store.add_predictions([records[1]])  # the same id twice: refused, not duplicated
    assert store.count() == 8
    # a second handle (another process in real life) sees the same rows; tables already exist
    assert InferenceStore(pg_url).count() == 8
    store.close()


@pytest.mark.integration
def test_driverless_urls_reach_postgres(pg_url: str) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    heroku = pg_url.replace("postgresql+psycopg://", "postgres://")
    InferenceStore(plain).add_predictions([_record(1)])
    assert InferenceStore(heroku).count() == 1


def _writer(url: str, worker: int, batches: int, size: int, barrier: Any, out: Any) -> None:
    """One 'replica': opens the store at the same moment as the others (so they race to
    create the tables), then writes ``batches`` batches of ``size`` rows."""
    store = None
    try:
        barrier.wait(120)
        store = InferenceStore(url)
        ids: list[str] = []
        for b in range(batches):
            batch = [
                PredictionRecord(
                    model_name="m",
                    model_version=1,
                    text=f"worker {worker} batch {b} row {i}",
                    prediction=i % 2,
                    probability=0.5,
                    confidence=0.5,
                    embedding=np.full(16, worker, dtype=np.float32),
                )
                for i in range(size)
            ]
            store.add_predictions(batch)
            ids.extend(r.id for r in batch)
        out.put((worker, ids, None))
    except Exception as exc:  # reported to the parent, which fails the test
        out.put((worker, [], f"{type(exc).__name__}: {exc}"))
    finally:
        if store is not None:
            store.close()


@pytest.mark.integration
def test_concurrent_writer_processes_lose_nothing(pg_url: str) -> None:
    workers, batches, size = 4, 25, 8
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(pg_url, w, batches, size, barrier, out)) for w in range(workers)]
    for p in procs:
        p.start()

    # read while they write: counts only grow, windows stay well-formed
    reader = InferenceStore(pg_url, create=False)
    counts: list[int] = []
    results: dict[int, tuple[list[str], str | None]] = {}
    deadline = time.monotonic() + 180
    while len(results) < workers and time.monotonic() < deadline:
        try:
            counts.append(reader.count())
            window = reader.window("m", 1, 50)
            assert len(window) <= 50
            assert all(a.created_at <= b.created_at for a, b in itertools.pairwise(window))
        except StoreError:
            assert not counts, "reads fail only before the writers created the tables"
        while not out.empty():
            worker, ids, error = out.get()
            results[worker] = (ids, error)
        time.sleep(0.05)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(results) == workers, "every writer reported back"
    assert not [e for _, e in results.values() if e], results

    written = [i for ids, _ in results.values() for i in ids]
    assert len(written) == workers * batches * size == len(set(written))
    assert counts == sorted(counts) and counts[-1] <= len(written)
    with reader.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, count(*) FROM predictions GROUP BY id")).all()
    assert {r[0] for r in rows} == set(written), "no lost rows"
    assert all(r[1] == 1 for r in rows), "no duplicated rows"
    assert reader.count("m", 1) == len(written)
    reader.close()
