"""What an operator sees of a running server (issue 14, "Metrics and logs"), read back from
a real uvicorn on 127.0.0.1 serving the tiny model:

- /metrics holds the process and GC collectors and ``sentops_build_info``, which follows a
  hot reload;
- the last drift check of each version, written to the store the way ``sentops drift``
  writes it, shows on /metrics (SQLite and PostgreSQL);
- ``X-Request-Id``: a valid one is kept, a missing or invalid one replaced by a new uuid4
  hex (never refused), answered in the header and stored on every row of the request;
- ``sentops serve --log-format json``: every log line is a JSON object, with the request id;
- the Grafana dashboard and the alert rules query only metrics a real server exposes."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from local_services import start_sentops_serve
from serve_support import Server, promote, scrape, serve_settings, start_server, wait_for

from sentiment_ops import __version__
from sentiment_ops.config import load_settings
from sentiment_ops.serving.request_ids import MAX_REQUEST_ID_CHARS, valid_request_id
from sentiment_ops.store import InferenceStore
from sentiment_ops.tracking.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sentops.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
MODEL = "sentiment-classifier"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The server's store: the default SQLite file in the home, or a new PostgreSQL database."""
    if request.param == "postgresql":
        monkeypatch.setenv("SENTOPS_STORE__URL", request.getfixturevalue("pg_url"))
    yield load_settings().store_url


@pytest.fixture()
def served(home_with_model: dict[str, Any], running: list[Server]) -> Server:
    """Version 1 promoted and served (torch) from this test's home."""
    promote(1)
    srv = start_server(serve_settings())
    running.append(srv)
    return srv


# -- /metrics: process, GC, build info ---------------------------------------------------------
def test_metrics_have_process_gc_and_a_build_info_that_follows_a_reload(
    home_with_model: dict[str, Any], running: list[Server]
) -> None:
    promote(1)
    srv = start_server(serve_settings(poll_interval_s=0.2))
    running.append(srv)
    with srv.client() as c:
        samples = scrape(c)
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
            assert samples[name][0][1] > 0, name
        assert {labels["generation"] for labels, _ in samples["python_gc_objects_collected_total"]} == {"0", "1", "2"}
        assert samples["sentops_build_info"] == [
            ({"version": __version__, "model_name": MODEL, "model_version": "1", "backend": "torch"}, 1.0)
        ]
        v2 = Registry(load_settings()).register(home_with_model["run_id"]).version
        promote(v2)
        wait_for(lambda: scrape(c)["sentops_build_info"][0][0]["model_version"] == str(v2), timeout=30)
        (only,) = scrape(c)["sentops_build_info"]  # the old version's series is gone
        assert only == ({"version": __version__, "model_name": MODEL, "model_version": str(v2), "backend": "torch"}, 1)


def test_build_info_before_any_model_is_loaded(home_with_model: dict[str, Any], running: list[Server]) -> None:
    srv = start_server(serve_settings())  # nothing promoted: the server starts, not ready
    running.append(srv)
    with srv.client() as c:
        assert scrape(c)["sentops_build_info"] == [
            ({"version": __version__, "model_name": MODEL, "model_version": "", "backend": "torch"}, 1.0)
        ]


# -- /metrics: drift checks from the store ------------------------------------------------------
def test_drift_checks_in_the_store_show_on_metrics(store_url: str, served: Server) -> None:
    with served.client() as c:
        samples = scrape(c)
        assert "sentops_drift_p_value" not in samples and "sentops_drift_detected" not in samples
        store = InferenceStore(store_url)
        try:
            # what `sentops drift` records (sentiment_ops/drift/check.py: record_drift_check of the report)
            store.record_drift_check(MODEL, 1, {"window": 500, "n_rows": 120, "drift": False, "p_value": 0.42})
            # a binary check recorded before per-class shares: its positive share stands for the classes
            old_mix = {"reference_positive": 0.5, "window_positive": 0.75, "p_value": 0.001}
            store.record_drift_check(
                MODEL, 1, {"window": 500, "n_rows": 300, "drift": True, "p_value": 0.002, "label_mix": old_mix}
            )
            # the repeated mode (drift.false_alarm_every) keeps its running state with the check
            monitor = {"mode": "repeated", "statistic": 1.25, "threshold": 2.51, "checks_since_alarm": 17}
            monitor["expected_checks_between_false_alarms"] = 720.0
            mix = {"p_value": 0.3, "window_shares": {"negative": 0.2, "neutral": 0.5, "positive": 0.3}}
            mix["reference_shares"] = {"negative": 0.25, "neutral": 0.45, "positive": 0.3}
            check = {"window": 200, "n_rows": 200, "drift": False, "p_value": 0.5, "monitor": monitor, "label_mix": mix}
            store.record_drift_check(MODEL, 2, check)
            store.record_drift_check("another-model", 1, {"window": 9, "n_rows": 9, "drift": True, "p_value": 0.0})
            newest = store.latest_drift_checks(MODEL)
        finally:
            store.close()
        samples = scrape(c)  # read from the store at this scrape: no restart, no wait
    v1 = {"model_name": MODEL, "model_version": "1"}
    v2 = {"model_name": MODEL, "model_version": "2"}
    assert sorted(samples["sentops_drift_p_value"], key=str) == sorted([(v1, 0.002), (v2, 0.5)], key=str)
    assert sorted(samples["sentops_drift_detected"], key=str) == sorted([(v1, 1.0), (v2, 0.0)], key=str)
    assert sorted(samples["sentops_drift_window_rows"], key=str) == sorted([(v1, 300.0), (v2, 200.0)], key=str)
    stamps = dict(
        (labels["model_version"], value) for labels, value in samples["sentops_drift_check_timestamp_seconds"]
    )
    assert stamps == {str(n["model_version"]): n["created_at"].timestamp() for n in newest}
    # the running state of the repeated mode: only for the version checked that way
    assert samples["sentops_drift_monitor_statistic"] == [(v2, 1.25)]
    assert samples["sentops_drift_monitor_threshold"] == [(v2, 2.51)]
    assert samples["sentops_drift_checks_since_alarm"] == [(v2, 17.0)]
    assert samples["sentops_drift_expected_checks_between_false_alarms"] == [(v2, 720.0)]
    # the label mix: its test's p-value, and each class's share in the window and the reference
    assert sorted(samples["sentops_drift_label_p_value"], key=str) == sorted([(v1, 0.001), (v2, 0.3)], key=str)
    shares = {
        (labels["model_version"], labels["class"], labels["sample"]): value
        for labels, value in samples["sentops_drift_class_share"]
    }
    assert shares[("2", "neutral", "window")] == 0.5 and shares[("2", "neutral", "reference")] == 0.45
    assert len([k for k in shares if k[0] == "2"]) == 6
    assert shares[("1", "positive", "window")] == 0.75 and shares[("1", "negative", "reference")] == 0.5


# -- X-Request-Id -------------------------------------------------------------------------------
def _stored(srv: Server, store_url: str, request_id: str) -> list[Any]:
    assert srv.state.writer.flush(30)
    store = InferenceStore(store_url)
    try:
        return store.for_request(request_id)
    finally:
        store.close()


def test_request_id_is_kept_answered_and_stored_with_every_row(store_url: str, served: Server) -> None:
    with served.client() as c:
        given = "client-7f3a:order/42@eu-west"
        r = c.post("/predict", json={"text": "a fine film"}, headers={"X-Request-Id": given})
        assert r.status_code == 200 and r.headers["x-request-id"] == given
        batch = c.post("/predict/batch", json={"texts": ["one", "two", "three"]}, headers={"X-Request-Id": "batch-1"})
        assert batch.status_code == 200 and batch.headers["x-request-id"] == "batch-1"
        made = c.post("/invocations", json={"inputs": ["no id given"]})
        assert made.status_code == 200
        generated = made.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        assert c.get("/health").headers["x-request-id"] != c.get("/health").headers["x-request-id"]
        # a request refused before prediction still answers its id
        bad = c.post("/predict", json={"text": ""}, headers={"X-Request-Id": "bad-body-1"})
        assert bad.status_code == 422 and bad.headers["x-request-id"] == "bad-body-1"
    (row,) = _stored(served, store_url, given)
    assert row.id == r.json()["id"] and row.request_id == given
    rows = _stored(served, store_url, "batch-1")
    assert sorted(x.id for x in rows) == sorted(p["id"] for p in batch.json()["predictions"])
    assert {x.request_id for x in rows} == {"batch-1"}
    (inv,) = _stored(served, store_url, generated)
    assert inv.text == "no id given"
    assert _stored(served, store_url, "bad-body-1") == []


@pytest.mark.parametrize(
    "raw",
    [
        b"x" * (MAX_REQUEST_ID_CHARS + 1),  # too long
        b"has space",
        b"tab\there",
        b"caf\xe9",  # not ASCII
        b"",
    ],
    ids=["too-long", "space", "tab", "non-ascii", "empty"],
)
def test_an_invalid_request_id_is_replaced_not_refused(raw: bytes, served: Server) -> None:
    with served.client() as c:
        r = c.post("/predict", json={"text": "still answered"}, headers=[(b"X-Request-Id", raw)])
    assert r.status_code == 200
    replaced = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)
    (row,) = _stored(served, load_settings().store_url, replaced)
    assert row.id == r.json()["id"]


@pytest.mark.parametrize("raw", [b"ok\x00", b"a\x1fb", b"del\x7f", b"\r\nX-Evil: 1"])
def test_control_characters_are_never_a_valid_request_id(raw: bytes) -> None:
    """HTTP clients refuse to send these, so the rule is checked where it is written."""
    assert valid_request_id(raw) is None
    assert valid_request_id(b"A" * MAX_REQUEST_ID_CHARS) == "A" * MAX_REQUEST_ID_CHARS


# -- sentops serve --log-format json --------------------------------------------------------------
def test_json_log_lines_parse_and_carry_the_request_id(
    home_with_model: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    promote(1)
    monkeypatch.setenv("SENTOPS_SERVE__BACKEND", "torch")
    log = tmp_path / "serve.log"
    server = start_sentops_serve({}, log, args=["--log-format", "json", "--access-log"])
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.post("/predict", json={"text": "logged"}, headers={"X-Request-Id": "trace-me-1"})
            assert r.status_code == 200
            made = c.post("/predict/batch", json={"texts": ["a", "b"]}).headers["x-request-id"]
            bad = c.post("/predict", json={"text": 3}, headers={"X-Request-Id": "trace-me-2"})
            assert bad.status_code == 422
    finally:
        # uvicorn shuts down gracefully, then re-raises the signal (exit -15)
        assert server.stop() in (0, -signal.SIGTERM), log.read_text()[-2000:]
    lines = log.read_text().splitlines()
    banner = [line for line in lines if line.startswith("serving alias")]  # the CLI's own line, on stdout
    entries = [json.loads(line) for line in lines if line not in banner]
    assert len(banner) == 1 and entries
    assert all({"ts", "level", "logger", "message"} <= e.keys() for e in entries)
    access = {e["request_id"]: e for e in entries if e["logger"] == "uvicorn.access"}
    assert access["trace-me-1"]["path"] == "/predict" and access["trace-me-1"]["status"] == 200
    assert access[made]["path"] == "/predict/batch"
    assert access["trace-me-2"]["status"] == 422
    assert any(e["logger"].startswith("sentiment_ops") and "now serving" in e["message"] for e in entries)
    assert any(e["logger"].startswith("uvicorn") and "Shutting down" in e["message"] for e in entries)


# -- the Grafana dashboard and the alert rules ----------------------------------------------------
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions,
    keywords, label names (in ``{…}`` or a ``by (…)`` clause) or range durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        following = expr[m.end() :].lstrip()
        if following.startswith("(") or m.group() in PROMQL_WORDS:
            continue  # a function (or aggregation) call, or a keyword
        names.add(m.group())
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = 'histogram_quantile(0.95, sum by (le) (rate(a_bucket{endpoint=~"/p"}[5m]))) / on (x) group_left b_total'
    assert metric_names(expr) == {"a_bucket", "b_total"}


def _queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard and the alert rules, by where it is."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    out = {}
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["type"] in {"timeseries", "stat"} and panel["targets"], panel.get("title")
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        for target in panel["targets"]:
            assert target["refId"] and target["expr"].strip()
            out[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] and rule["annotations"]["summary"]
            out[f"alert {rule['alert']}"] = rule["expr"]
    return out


def test_dashboard_and_alerts_query_only_metrics_the_server_exposes(store_url: str, served: Server) -> None:
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    for wanted in ("Request rate", "Predict latency percentiles", "Batch sizes", "Inference store lag"):
        assert wanted in titles
    assert {"Drift p-value", "Model version served"} <= titles
    store = InferenceStore(store_url)
    try:
        shares = {"negative": 0.5, "positive": 0.5}
        mix = {"p_value": 0.4, "window_shares": shares, "reference_shares": shares}
        store.record_drift_check(
            MODEL, 1, {"window": 500, "n_rows": 500, "drift": False, "p_value": 0.3, "label_mix": mix}
        )
    finally:
        store.close()
    with served.client() as c:
        assert c.post("/predict", json={"text": "one request, so every labelled series exists"}).status_code == 200
        exposed = set(scrape(c))
    used = {where: metric_names(expr) for where, expr in _queries().items()}
    assert all(used.values()), [w for w, names in used.items() if not names]
    missing = {where: names - exposed for where, names in used.items() if names - exposed}
    assert missing == {}
