"""The alias history on a real MLflow registry (SQLite and the file store): thousands of
moves within PostgreSQL's tag size limit, rollback walking back through them, the first
format read and migrated, and promote/rollback when a step fails halfway (faults injected
into a real ``MlflowClient``, no mocks of MLflow itself)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from sentiment_ops.config import Settings, load_settings
from sentiment_ops.errors import NotFoundError, RegistryUnavailableError
from sentiment_ops.tracking.alias_history import CHUNK_EVENTS, HEAD_TAG, LEGACY_TAG, AliasLog, Move
from sentiment_ops.tracking.registry import Registry

PG_TAG_LIMIT = 5000  # MLflow's PostgreSQL schema: registered_model_tags.value varchar(5000)


class FlakyClient(MlflowClient):
    """A real MlflowClient whose registry writes fail on demand, like a server going away
    between two requests: ``fail(method, key)`` decides per call."""

    fail: Callable[[str, str], bool] = staticmethod(lambda method, key: False)  # type: ignore[assignment]

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        if self.fail("tag", key):
            raise ConnectionError("connection refused (injected)")
        super().set_registered_model_tag(name, key, value)

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        if self.fail("alias", alias):
            raise ConnectionError("connection refused (injected)")
        super().set_registered_model_alias(name, alias, version)


def make_versions(client: MlflowClient, name: str, n: int) -> None:
    """``n`` model versions without training anything (the history only needs versions)."""
    client.create_registered_model(name)
    exp = client.create_experiment("history-test")
    run = client.create_run(exp)
    for _ in range(n):
        client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)


@pytest.fixture(params=["sqlite", "file"])
def settings_(request: pytest.FixtureRequest, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    if request.param == "file":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        monkeypatch.setenv("SENTOPS_MLFLOW__TRACKING_URI", (isolated_home / "mlruns").as_uri())
    return load_settings()


def _registry(settings: Settings, versions: int = 4) -> tuple[Registry, FlakyClient]:
    client = FlakyClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    registry = Registry(settings, client=client)
    make_versions(client, registry.model_name, versions)
    return registry, client


def _tags(registry: Registry) -> dict[str, str]:
    return dict(registry.client.get_registered_model(registry.model_name).tags)


def _walk(registry: Registry, n: int) -> list[int]:
    return [registry.rollback().to_version for _ in range(n)]


def test_hundreds_of_moves_fit_every_backend_and_roll_back(settings_: Settings) -> None:
    registry, _ = _registry(settings_)
    sequence = [1 + i % 4 for i in range(130)]  # more than the first format kept (100)
    for v in sequence:
        registry.promote(v)
    history = registry.history("production")
    assert [e.to_version for e in history] == sequence
    assert [e.from_version for e in history] == [None, *sequence[:-1]]
    assert max(len(v) for v in _tags(registry).values()) < PG_TAG_LIMIT
    # rollback pops the stack of promotions: it walks back through all of them
    assert _walk(registry, 5) == sequence[-2:-7:-1]
    registry.promote(2)
    assert _walk(registry, 2) == [sequence[-6], sequence[-7]]
    assert len(registry.history("production")) == 130 + 5 + 1 + 2


def test_ten_thousand_moves(isolated_home: Path) -> None:
    """A history of 10,000 moves (years of promotions) written as promote would write it;
    then promote, rollback and history through the registry. Their speed is measured by
    benchmarks/alias_history.py (docs/benchmarks.md), not here."""
    registry, _ = _registry(load_settings())
    name = registry.model_name
    log_ = AliasLog("production", {})
    for i in range(10_000):
        log_.append(Move("2026-11-30T00:00:00+00:00", None if i == 0 else 1 + (i - 1) % 4, 1 + i % 4, "promote", i - 1))
    log_.save(*registry._tag_writers())
    registry.client.set_registered_model_alias(name, "production", str(1 + 9_999 % 4))
    assert max(len(v) for v in _tags(registry).values()) < PG_TAG_LIMIT

    registry.promote(1)
    assert [e.to_version for e in (registry.rollback(), registry.rollback())] == [1 + 9_999 % 4, 1 + 9_998 % 4]
    history = registry.history("production")
    assert len(history) == 10_003 and history[-1].action == "rollback"
    assert [e.to_version for e in history[:3]] == [1, 2, 3]
    assert registry.history_tail("production", 20) == (10_003, history[-20:])


def test_first_format_is_read_and_migrated(settings_: Settings) -> None:
    registry, client = _registry(settings_)
    old = [
        {"at": "2026-01-01T00:00:00+00:00", "alias": "production", "from_version": None, "to_version": 1},
        {"at": "2026-01-02T00:00:00+00:00", "alias": "production", "from_version": 1, "to_version": 2},
        {"at": "2026-01-03T00:00:00+00:00", "alias": "production", "from_version": 2, "to_version": 3},
        {"at": "2026-01-04T00:00:00+00:00", "alias": "production", "from_version": 3, "to_version": 2},
    ]
    for e, action in zip(old, ("promote", "promote", "promote", "rollback"), strict=True):
        e["action"] = action
    client.set_registered_model_tag(registry.model_name, LEGACY_TAG.format(alias="production"), json.dumps(old))
    client.set_registered_model_alias(registry.model_name, "production", "2")
    assert [e.__dict__ for e in registry.history("production")] == old
    assert registry.rollback().to_version == 1  # the old stack: 1, 2, (3 popped)
    tags = _tags(registry)
    assert LEGACY_TAG.format(alias="production") not in tags and HEAD_TAG.format(alias="production") in tags
    assert [(e.action, e.to_version) for e in registry.history("production")] == [
        ("promote", 1),
        ("promote", 2),
        ("promote", 3),
        ("rollback", 2),
        ("rollback", 1),
    ]


def test_failed_alias_move_changes_neither(settings_: Settings) -> None:
    registry, client = _registry(settings_)
    registry.promote(1)
    registry.promote(2)
    client.fail = lambda method, key: method == "alias"  # type: ignore[method-assign]
    with pytest.raises(RegistryUnavailableError) as info:
        registry.promote(3)
    assert info.value.exit_code == 69
    with pytest.raises(RegistryUnavailableError):
        registry.rollback()
    client.fail = lambda method, key: False  # type: ignore[method-assign]
    assert registry.alias_version("production") == 2
    assert [e.to_version for e in registry.history("production")] == [1, 2]
    assert AliasLog("production", _tags(registry)).pending is None  # the intent was taken back


def test_crash_after_the_intent_before_the_alias(settings_: Settings) -> None:
    """The process dies between recording the intent and moving the alias."""
    registry, _ = _registry(settings_)
    registry.promote(1)
    log_, current = registry._alias_log("production")
    log_.write_intent(*registry._tag_writers(), Move("2026-11-30T00:00:00+00:00", current, 3, "promote", 0))  # …crash
    assert AliasLog("production", _tags(registry)).pending is not None
    assert registry.alias_version("production") == 1
    assert [e.to_version for e in registry.history("production")] == [1]  # the move never happened
    registry.promote(2)
    assert [e.to_version for e in registry.history("production")] == [1, 2]
    assert registry.rollback().to_version == 1


def test_crash_after_the_alias_before_the_record(settings_: Settings) -> None:
    """The alias moved, then the confirmation could not be written (the failure that used
    to leave exit 1, a moved alias and no record)."""
    registry, client = _registry(settings_)
    registry.promote(1)
    registry.promote(2)
    head = HEAD_TAG.format(alias="production")
    writes: list[str] = []

    def fail_after_alias(method: str, key: str) -> bool:
        writes.append(method)
        return method == "tag" and "alias" in writes  # every tag write after the alias moved

    client.fail = fail_after_alias  # type: ignore[method-assign]
    event = registry.promote(3)  # the move is done and its intent stored: not an error
    client.fail = lambda method, key: False  # type: ignore[method-assign]
    assert event.to_version == 3 and registry.alias_version("production") == 3
    assert json.loads(_tags(registry)[head])["count"] == 2  # stored as an intent only
    assert AliasLog("production", _tags(registry)).pending.to_version == 3  # type: ignore[union-attr]
    assert [e.to_version for e in registry.history("production")] == [1, 2, 3]
    assert registry.rollback().to_version == 2  # the write settles the intent first
    assert json.loads(_tags(registry)[head])["count"] == 4
    assert [e.to_version for e in registry.history("production")] == [1, 2, 3, 2]


def test_failed_intent_changes_nothing(settings_: Settings) -> None:
    registry, client = _registry(settings_)
    registry.promote(1)
    client.fail = lambda method, key: method == "tag"  # type: ignore[method-assign]
    with pytest.raises(RegistryUnavailableError):
        registry.promote(2)
    client.fail = lambda method, key: False  # type: ignore[method-assign]
    assert registry.alias_version("production") == 1
    assert [e.to_version for e in registry.history("production")] == [1]


def test_repeated_crashes_settle_in_order(settings_: Settings) -> None:
    """Two confirmations lost in a row: each intent is settled before the next is written."""
    registry, client = _registry(settings_)
    registry.promote(1)
    head = HEAD_TAG.format(alias="production")
    client.fail = lambda method, key: key == head  # type: ignore[method-assign]
    registry.promote(2)
    with pytest.raises(RegistryUnavailableError):  # settling the first needs the head
        registry.promote(3)
    client.fail = lambda method, key: False  # type: ignore[method-assign]
    assert registry.alias_version("production") == 2
    registry.promote(3)
    assert [e.to_version for e in registry.history("production")] == [1, 2, 3]
    assert _walk(registry, 2) == [2, 1]


def test_alias_moved_behind_sentops_back(settings_: Settings) -> None:
    registry, client = _registry(settings_)
    for v in (1, 2):
        registry.promote(v)
    client.set_registered_model_alias(registry.model_name, "production", "4")  # e.g. the MLflow UI
    assert [e.to_version for e in registry.history("production")] == [1, 2]
    event = registry.rollback()
    assert (event.from_version, event.to_version) == (4, 2)  # back to what sentops last set
    assert registry.rollback().to_version == 1
    with pytest.raises(NotFoundError, match="no previous version"):
        registry.rollback()


def test_chunks_roll_over_at_the_boundary(settings_: Settings) -> None:
    registry, _ = _registry(settings_, versions=2)
    for i in range(CHUNK_EVENTS + 1):
        registry.promote(1 + i % 2)
    tags = _tags(registry)
    assert {k for k in tags if k.startswith("sentops.alias_log.production.")} == {
        "sentops.alias_log.production.head",
        "sentops.alias_log.production.0",
        "sentops.alias_log.production.1",
    }
    assert len(json.loads(tags["sentops.alias_log.production.1"])) == 1
    history = registry.history("production")
    assert len(history) == CHUNK_EVENTS + 1
    for last in (1, 2, 3, CHUNK_EVENTS, CHUNK_EVENTS + 1, CHUNK_EVENTS + 5):
        assert registry.history_tail("production", last) == (CHUNK_EVENTS + 1, history[-last:])
