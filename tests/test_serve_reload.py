"""Hot reload: the server follows the alias, keeps serving through a swap, survives a
version that cannot load, and reloads on demand through the admin endpoint."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from serve_support import Server, promote, serve_settings, start_server, wait_for

from sentiment_ops.config import load_settings
from sentiment_ops.inference.passes import PAD_SPLIT_FACTOR, split_by_length
from sentiment_ops.store import InferenceStore
from sentiment_ops.tracking.registry import Registry


def _register_copy(run_id: str, source: str | None = None) -> int:
    """A new version of the same logged model (or of a broken source)."""
    return Registry(load_settings()).register(run_id, source=source).version


def _version(c: httpx.Client) -> int | None:
    return c.get("/model").json()["version"]


class Load:
    """Clients posting /predict in a loop until stopped; every status and version kept."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url
        self.statuses: list[int] = []
        self.versions: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    r = c.post("/predict", json={"text": f"client {i} review {n}: quite good"})
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.versions.append(r.json()["model"]["version"])

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def test_alias_move_is_picked_up_without_failing_a_request(
    home_with_model: dict[str, Any], running: list[Server]
) -> None:
    promote(1)
    v2 = _register_copy(home_with_model["run_id"])
    srv = start_server(serve_settings(poll_interval_s=0.2))
    running.append(srv)
    with srv.client() as c, Load(srv.url) as load:
        wait_for(lambda: len(load.statuses) > 20)
        promote(v2)
        wait_for(lambda: _version(c) == v2, timeout=15)
        seen = len(load.versions)
        wait_for(lambda: len(load.versions) > seen + 20)
    assert load.errors == []
    assert set(load.statuses) == {200}
    assert load.versions[0] == 1 and load.versions[-1] == v2
    # once the new version answered, the old one never did again (atomic swap)
    first_new = load.versions.index(v2)
    assert set(load.versions[first_new:]) == {v2}
    metrics = srv.state.metrics.registry
    assert metrics.get_sample_value("sentops_reloads_total", {"outcome": "success"}) == 2
    srv.stop()
    db = InferenceStore(load_settings().store_url)
    assert db.count(model_version=1) + db.count(model_version=v2) == len(load.versions)
    assert db.count(model_version=v2) > 0


def test_broken_version_keeps_the_old_one_serving(home_with_model: dict[str, Any], running: list[Server]) -> None:
    promote(1)
    broken = _register_copy(home_with_model["run_id"], source="file:///nonexistent/sentops-model")
    srv = start_server(serve_settings(poll_interval_s=0.2))
    running.append(srv)
    with srv.client() as c:
        promote(broken)
        info = wait_for(lambda: (i := c.get("/model").json())["last_reload_error"] and i, timeout=15)
        assert info["version"] == 1 and info["ready"] is True
        assert info["last_reload_error"]["version"] == broken
        assert "cannot load" in info["last_reload_error"]["error"]
        r = c.post("/predict", json={"text": "still answering?"})
        assert r.status_code == 200 and r.json()["model"]["version"] == 1
        assert c.get("/ready").status_code == 200
        text = c.get("/metrics").text
        assert 'sentops_reloads_total{outcome="failure"} 1.0' in text
        assert f"sentops_reload_failed_version {float(broken)}" in text
        # the poller does not hammer a version that already failed
        time.sleep(1.0)
        assert srv.state.metrics.registry.get_sample_value("sentops_reloads_total", {"outcome": "failure"}) == 1
        # a good version behind the alias again clears the error
        good = _register_copy(home_with_model["run_id"])
        promote(good)
        wait_for(lambda: _version(c) == good, timeout=15)
        assert c.get("/model").json()["last_reload_error"] is None


def test_broken_version_at_start_is_not_ready(home_with_model: dict[str, Any], running: list[Server]) -> None:
    broken = _register_copy(home_with_model["run_id"], source="file:///nonexistent/sentops-model")
    promote(broken)
    srv = start_server(serve_settings())
    running.append(srv)
    with srv.client() as c:
        r = c.get("/ready")
        assert r.status_code == 503 and "last load error" in r.json()["detail"]
        p = c.post("/predict", json={"text": "hello"})
        assert p.status_code == 503
        assert c.get("/model").json()["last_reload_error"]["version"] == broken


def test_admin_reload_needs_the_token(
    home_with_model: dict[str, Any], running: list[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTOPS_ADMIN_TOKEN", "s3cret")
    promote(1)
    srv = start_server(serve_settings(poll_interval_s=3600))  # only explicit reloads
    running.append(srv)
    v2 = _register_copy(home_with_model["run_id"])
    promote(v2)
    with srv.client() as c:
        assert c.post("/admin/reload").status_code == 401
        assert c.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/admin/reload", headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert _version(c) == 1
        r = c.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200, r.text
        assert r.json()["changed"] is True and r.json()["model"]["version"] == v2
        assert c.post("/predict", json={"text": "x y"}).json()["model"]["version"] == v2

        broken = _register_copy(home_with_model["run_id"], source="file:///nonexistent/sentops-model")
        promote(broken)
        r = c.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 409
        assert f"cannot load version {broken}" in r.json()["detail"] and f"still serving version {v2}" in r.text
        assert "/admin/reload" in c.get("/openapi.json").json()["paths"]


def test_admin_reload_is_off_without_a_token(home_with_model: dict[str, Any], running: list[Server]) -> None:
    promote(1)
    srv = start_server(serve_settings())
    running.append(srv)
    with srv.client() as c:
        assert c.post("/admin/reload", headers={"Authorization": "Bearer anything"}).status_code == 404


def test_split_by_length_bounds_padding() -> None:
    lengths = [5, 300, 6, 12, 290, 9, 40]
    groups = split_by_length(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert max(lengths[i] for i in g) <= PAD_SPLIT_FACTOR * min(lengths[i] for i in g)
    assert split_by_length([7, 7, 7]) == [[0, 1, 2]]
    budgeted = split_by_length([30] * 10 + [256, 250], max_tokens=384)
    assert [len(g) for g in budgeted] == [10, 1, 1]  # 10 x 30 tokens fit; long texts go alone
    assert all(len(g) * 30 <= 384 for g in split_by_length([30] * 40, max_tokens=384))
