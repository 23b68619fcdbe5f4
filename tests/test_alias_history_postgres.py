"""The alias history on an ``mlflow server`` backed by PostgreSQL, where registered-model
tag values are ``varchar(5000)``: the single-tag history of the first format failed on the
43rd promote. Hundreds of moves through the registry in process (as ``sentops promote`` /
``rollback`` make them), then ``sentops models --history`` and ``sentops rollback`` through
the CLI."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from local_services import PostgresCluster, ServerProcess, cli_json, sql_rows, start_mlflow_server
from test_alias_history import PG_TAG_LIMIT, make_versions

from sentiment_ops.config import load_settings
from sentiment_ops.tracking.alias_history import AliasLog, Move
from sentiment_ops.tracking.registry import Registry

pytestmark = pytest.mark.integration

MOVES = 520


@pytest.fixture()
def server(postgres_cluster: PostgresCluster, tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    db = postgres_cluster.create_database("history_it")
    srv = start_mlflow_server(db, tmp_path / "mlartifacts", tmp_path / "mlflow-server.log")
    yield srv, db
    srv.stop()


def test_hundreds_of_moves_on_a_postgres_backed_server(
    server: tuple[ServerProcess, str], cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, db = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.url)
    registry = Registry(load_settings())
    make_versions(registry.client, registry.model_name, 5)

    # promotions with a rollback now and then; ``stack`` is what rollback should walk back
    expected: list[tuple[str, int]] = []
    stack: list[int] = []
    t0 = time.perf_counter()
    for i in range(MOVES):
        if i % 9 == 8 and len(stack) > 1:
            assert registry.rollback().to_version == stack[-2]
            stack.pop()
            expected.append(("rollback", stack[-1]))
        else:
            version = 1 + i % 5
            assert registry.promote(version).to_version == version
            stack.append(version)
            expected.append(("promote", version))
    per_move = (time.perf_counter() - t0) / MOVES
    print(f"{MOVES} moves on mlflow server + PostgreSQL: {per_move * 1000:.0f} ms per move")
    assert per_move < 2.0

    longest = sql_rows(db, "SELECT max(length(value)), count(*) FROM registered_model_tags")[0]
    assert longest[0] < PG_TAG_LIMIT and longest[1] >= MOVES // 50

    # through the CLI, as a user would look and roll back
    history = cli_json(cli, "models", "--history", "production", "--json")
    assert [(e["action"], e["to_version"]) for e in history] == expected
    table = cli("models", "--history", "production")  # a terminal gets the recent moves
    assert table.exit_code == 0 and f"{MOVES - 50} earlier moves not shown" in table.stdout
    assert sum(("promote" in line or "rollback" in line) for line in table.stdout.splitlines()) == 50
    table = cli("models", "--history", "production", "--last", "0")
    assert table.exit_code == 0 and "not shown" not in table.stdout
    assert table.stdout.count("rollback") == sum(a == "rollback" for a, _ in expected)
    for _ in range(3):
        event = cli_json(cli, "rollback", "--json")
        assert (event["from_version"], event["to_version"]) == (stack[-1], stack[-2])
        stack.pop()
    assert sql_rows(db, "SELECT version FROM registered_model_aliases WHERE alias = 'production'") == [(stack[-1],)]
    assert len(cli_json(cli, "models", "--history", "production", "--json")) == MOVES + 3

    # a crash between the intent and the alias move is invisible, and the next promote is fine
    log_, current = registry._alias_log("production")
    log_.write_intent(*registry._tag_writers(), Move("2026-11-30T00:00:00+00:00", current, 5, "promote", log_.top))
    assert AliasLog("production", dict(registry.client.get_registered_model(registry.model_name).tags)).pending
    assert len(cli_json(cli, "models", "--history", "production", "--json")) == MOVES + 3
    assert cli_json(cli, "promote", "--version", "4", "--json")["from_version"] == stack[-1]
    assert cli_json(cli, "rollback", "--json")["to_version"] == stack[-1]
