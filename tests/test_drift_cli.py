"""``sentops embed-reference`` and ``sentops drift`` end to end on a real SQLite MLflow,
a real inference store and the tiny model.

Rows are written to the store the way the server logs them: embeddings from
``SentimentModel.predict`` of the served model version (one forward pass)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sentiment_ops.config import Settings, load_settings
from sentiment_ops.data import load_corpus
from sentiment_ops.drift import monitor
from sentiment_ops.drift.reference import embed_as_served
from sentiment_ops.errors import EXIT_DRIFT
from sentiment_ops.inference.onnx import export_cache_dir
from sentiment_ops.store import InferenceStore, PredictionRecord
from sentiment_ops.tracking.registry import Registry


def imdb_texts(n: int) -> list[str]:
    return load_corpus("imdb").test.texts[:n]


def tweet_texts(n: int) -> list[str]:
    return load_corpus("tweets").test.texts[:n]


SERVING = "(the serving backend)"


def log_served(
    settings: Settings, texts: list[str], version: int = 1, alias: str = "production", backend: str | None = SERVING
) -> int:
    """Write predictions as the server does: label, probability and embedding of one pass
    of the serving backend (ONNX int8 by default, with the server's export cache), recorded
    as embedded by ``backend`` (None: a row from before the backend was recorded)."""
    registry = Registry(settings)
    model = registry.load_model(version)
    info = registry.get_version(version)
    cache = export_cache_dir(settings.home, info.name, info.version, info.run_id)
    pred = embed_as_served(model, texts, settings.serve.backend, cache, settings.serve.batch_max_tokens)
    assert pred.embeddings is not None
    records = [
        PredictionRecord(
            model_name=settings.mlflow.model_name,
            model_version=version,
            alias=alias,
            text=text,
            prediction=int(pred.labels[i]),
            probability=float(pred.probabilities[i, 1]),
            confidence=float(pred.confidences[i]),
            embedding=pred.embeddings[i],
            backend=settings.serve.backend if backend == SERVING else backend,
        )
        for i, text in enumerate(texts)
    ]
    store = InferenceStore(settings.store_url, store_text=settings.store.store_text)
    try:
        return store.add_predictions(records)
    finally:
        store.close()


@pytest.fixture()
def production(cli: Callable[..., Any], trained: dict[str, Any]) -> Settings:
    result = cli("promote", "--version", "1", "--json")
    assert result.exit_code == 0, result.output
    return load_settings()


def _json(result: Any) -> Any:
    return json.loads(result.stdout)


def test_no_drift_on_unshifted_imdb(cli, production: Settings) -> None:  # type: ignore[no-untyped-def]
    log_served(production, imdb_texts(80))
    result = cli("drift", "--window", "80", "--json")
    assert result.exit_code == 0, result.output
    report = _json(result)
    assert report["drift"] is False and report["test_drift"] is False and report["method"] == "calibrated"
    assert report["p_value"] >= 0.01
    assert report["n_rows"] == 80 and report["n_reference"] == 40
    assert report["model_version"] == 1 and report["alias"] == "production"
    assert report["cosine_threshold"] == pytest.approx(0.30)
    assert set(report["label_mix"]) >= {"reference_positive", "window_positive", "p_value"}
    assert len(report["farthest"]) == 5 and report["texts"] == "hidden"
    assert all(set(f) == {"index", "id", "distance"} for f in report["farthest"])  # no texts unless asked
    shown = _json(cli("drift", "--window", "80", "--json", "--show-texts"))
    assert shown["texts"] == "shown" and [f["id"] for f in shown["farthest"]] == [f["id"] for f in report["farthest"]]
    assert all(f["text"] in imdb_texts(80) for f in shown["farthest"])
    assert report["reference"]["split"] == "validation" and report["reference"]["backend"] == "onnx"
    table = cli("drift", "--window", "80")
    assert table.exit_code == 0
    for row in ("Drift score", "Threshold", "Status", "MMD²", "NN distance²", "p-value", "Positive share", "farthest"):
        assert row in table.stdout, row


def test_tweets_are_drift_exit_3(cli, production: Settings) -> None:  # type: ignore[no-untyped-def]
    log_served(production, tweet_texts(80))
    result = cli("drift", "--window", "80", "--json")
    assert result.exit_code == EXIT_DRIFT == 3, result.output
    report = _json(result)
    assert report["drift"] is True and report["p_value"] < 0.001 and report["method"] == "calibrated"
    shown = _json(cli("drift", "--window", "80", "--json", "--show-texts"))
    assert shown["farthest"][0]["text"] in tweet_texts(80)
    table = cli("drift", "--window", "80")
    assert table.exit_code == 3 and "DRIFT" in table.stdout


def test_seed_rule_method(cli, production: Settings) -> None:  # type: ignore[no-untyped-def]
    log_served(production, imdb_texts(60))
    result = cli("drift", "--method", "cosine", "--json")
    report = _json(result)
    assert report["method"] == "cosine"
    assert report["drift"] is report["cosine_drift"]
    assert result.exit_code == (3 if report["drift"] else 0)
    bad = cli("drift", "--method", "ks")
    assert bad.exit_code == 2
    assert "is not one of 'calibrated', 'mmd_nn', 'mmd', 'cosine'" in " ".join(bad.stderr.replace("│", " ").split())
    mmd = json.loads(cli("drift", "--method", "mmd", "--json").stdout)
    assert mmd["nn_p_value"] is None and mmd["p_value"] == mmd["mmd_p_value"]
    few = cli("drift", "--permutations", "50", "--alpha", "0.01")
    assert few.exit_code == 2 and "at least 200" in few.stderr
    assert len(few.stderr.strip().splitlines()) == 1  # the usual one-line invalid setting


def test_not_enough_data_exit_4(cli, production: Settings) -> None:  # type: ignore[no-untyped-def]
    result = cli("drift")
    assert result.exit_code == 4
    assert "only 0 logged predictions" in result.stderr and "at least 50" in result.stderr
    log_served(production, imdb_texts(12))
    result = cli("drift", "--json")
    assert result.exit_code == 4 and "only 12" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_other_versions_rows_do_not_count(cli, production: Settings) -> None:  # type: ignore[no-untyped-def]
    log_served(production, imdb_texts(60), version=1)
    records_v2 = InferenceStore(production.store_url)
    try:
        rows = records_v2.window(production.mlflow.model_name, 1, 500)
        for r in rows:
            r.id, r.model_version = r.id[::-1], 2  # a copy logged under another version
        records_v2.add_predictions(rows)
    finally:
        records_v2.close()
    assert _json(cli("drift", "--json", "--window", "500"))["n_rows"] == 60


def test_unknown_alias_and_version_exit_66(cli, trained) -> None:  # type: ignore[no-untyped-def]
    result = cli("drift", "--alias", "production")  # trained but never promoted
    assert result.exit_code == 66 and "sentops promote" in result.stderr
    assert cli("drift", "--version", "9").exit_code == 66
    assert cli("embed-reference", "--version", "9").exit_code == 66


def test_no_reference_then_embed_reference(cli, tiny_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SENTOPS_TRAIN__REFERENCE_SAMPLES", "0")  # train without a reference
    assert cli("train", "--json").exit_code == 0
    assert cli("promote", "--version", "1").exit_code == 0
    settings = load_settings()
    log_served(settings, imdb_texts(60))
    result = cli("drift")
    assert result.exit_code == 66
    assert "sentops embed-reference" in result.stderr

    result = cli("embed-reference", "--alias", "production", "--samples", "30", "--json")
    assert result.exit_code == 0, result.output
    meta = _json(result)
    assert meta["count"] == 30 and meta["split"] == "validation" and meta["model_version"] == 1
    assert meta["data"] == "imdb" and meta["pooling"] == "mean" and len(meta["data_hash"]) == 16
    assert meta["backend"] == "onnx"  # the default serving backend embeds the traffic
    assert set(meta["label_mix"]) == {"negative", "positive"}
    registry = Registry(settings)
    run_id = registry.get_version(1).run_id
    files = {a.path for a in registry.client.list_artifacts(run_id, "reference/onnx")}
    assert files == {"reference/onnx/embeddings.npz", "reference/onnx/meta.json", "reference/onnx/calibration.npz"}
    assert meta["calibration_count"] == 200  # drift.calibration_samples (tests: 200)

    report = _json(cli("drift", "--json"))
    assert report["n_reference"] == 30 and report["n_rows"] == 60
    human = cli("embed-reference", "--version", "1", "--samples", "20", "--backend", "torch")
    assert human.exit_code == 0 and "version 1" in human.stdout and "torch backend" in human.stdout
    files = {a.path for a in registry.client.list_artifacts(run_id, "reference")}
    assert {"reference/embeddings.npz", "reference/meta.json", "reference/onnx"} <= files
    assert cli("embed-reference", "--version", "1", "--data", "nope").exit_code == 65


def test_reference_must_match_the_serving_backend(cli, tiny_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """int8-served windows against an fp32 reference would look drifted on every check:
    the drift check only uses the reference embedded by the configured serving backend."""
    monkeypatch.setenv("SENTOPS_SERVE__BACKEND", "torch")  # trained with a torch reference
    assert cli("train", "--json").exit_code == 0
    assert cli("promote", "--version", "1").exit_code == 0
    settings = load_settings()
    log_served(settings, imdb_texts(60))
    report = _json(cli("drift", "--json"))
    assert report["reference"]["backend"] == "torch" and report["n_reference"] == 40
    monkeypatch.setenv("SENTOPS_SERVE__BACKEND", "onnx")
    result = cli("drift")  # the torch-served window is not compared with an onnx reference
    assert result.exit_code == 65
    assert "60 rows embedded by torch but the reference of version 1 was embedded by onnx" in " ".join(
        result.stderr.split()
    )
    log_served(load_settings(), imdb_texts(60))  # onnx-served traffic, but no onnx reference yet
    result = cli("drift")
    assert result.exit_code == 66
    assert "onnx serving backend" in result.stderr and "sentops embed-reference" in result.stderr


def test_checks_recorded_history_and_plot(cli, production: Settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("drift", "--history").stdout.startswith("no drift checks")
    assert cli("drift", "--history", "--plot", str(tmp_path / "none.png")).exit_code == 4
    log_served(production, imdb_texts(60))
    first = _json(cli("drift", "--json"))
    log_served(production, tweet_texts(60))
    second = _json(cli("drift", "--json", "--window", "60"))
    assert second["drift"] is True and second["check_id"] == first["check_id"] + 1

    history = _json(cli("drift", "--history", "--json"))
    assert [h["id"] for h in history] == [first["check_id"], second["check_id"]]
    assert [h["drift"] for h in history] == [first["drift"], True]
    assert history[1]["p_value"] == pytest.approx(second["p_value"])
    assert history[1]["details"]["label_mix"] == second["label_mix"]

    plot = tmp_path / "drift.png"
    result = cli("drift", "--history", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
    assert "Drift checks" in result.stdout and "DRIFT" in result.stdout
    assert cli("drift", "--history", "--plot", str(tmp_path / "no" / "dir.png")).exit_code == 65

    # the same checks as metrics of the version's monitoring run, step = check id
    registry = Registry(production)
    client = registry.client
    exp = client.get_experiment_by_name(f"{production.mlflow.experiment}-monitoring")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == second["monitoring_run_id"]
    assert runs[0].data.tags["sentops.model_version"] == "1"
    steps = client.get_metric_history(runs[0].info.run_id, "drift_p_value")
    assert sorted((m.step, round(m.value, 6)) for m in steps) == [
        (first["check_id"], round(first["p_value"], 6)),
        (second["check_id"], round(second["p_value"], 6)),
    ]
    detected = client.get_metric_history(runs[0].info.run_id, "drift_detected")
    assert max(m.value for m in detected) == 1.0


def test_traffic_of_another_embedding_space_is_left_out_and_named(cli, production: Settings) -> None:  # type: ignore[no-untyped-def]
    """The reference of version 1 was embedded by onnx (the default): torch-embedded rows and
    rows of unknown backend (from before the upgrade) are never compared with it."""
    log_served(production, imdb_texts(10), backend=None)  # rows from before the upgrade
    result = cli("drift", "--json")
    assert result.exit_code == 4, result.output  # not enough (new) data yet
    assert "10 rows of unknown backend" in " ".join(result.stderr.split())
    log_served(production, imdb_texts(60), backend="torch")
    result = cli("drift", "--json")
    assert result.exit_code == 65, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    message = " ".join(result.stderr.split())
    assert (
        "the window holds 60 rows embedded by torch, 10 rows of unknown backend (logged before it was recorded) "
        "but the reference of version 1 was embedded by onnx (only 0 rows match)"
    ) in message, message
    log_served(production, imdb_texts(60))
    report = _json(cli("drift", "--json", "--window", "500"))
    assert report["n_rows"] == 60 and report["reference"]["backend"] == "onnx"


def test_history_limit_keeps_the_newest_checks_of_the_version(cli, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """--limit keeps the most recent checks (shown oldest first), and --version filters
    before the limit: a version's checks are not crowded out by another version's."""
    store = InferenceStore(settings.store_url)
    try:
        ids = [
            store.record_drift_check(
                settings.mlflow.model_name, version, {"window": 10, "n_rows": 10, "drift": False, "p_value": 0.5}
            )
            for version in (1, 1, 1, 2, 2, 2, 2)
        ]
    finally:
        store.close()
    newest = _json(cli("drift", "--history", "--limit", "2", "--json"))
    assert [h["id"] for h in newest] == ids[-2:]
    of_v1 = _json(cli("drift", "--history", "--version", "1", "--limit", "2", "--json"))
    assert [h["id"] for h in of_v1] == ids[1:3]


HOSTILE = [
    "[/bold] closes a tag that was never opened",
    "[link=https://evil.example/x]click me[/link] for a refund",
    "\x1b[31mred\x1b[0m and \x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\ in ESC sequences",
    "C1 \x9b31m CSI and \x85 NEL @AmericanAir =1+1",
]


def test_served_texts_are_plain_data_and_shown_only_when_asked(  # type: ignore[no-untyped-def]
    cli, production: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rich markup, hyperlinks and terminal escapes in served texts are shown as the literal
    characters (controls as \\xNN), never interpreted; no text at all without --show-texts."""
    monkeypatch.setenv("SENTOPS_DRIFT__TOP_K", "100")  # every row of the window is listed
    monkeypatch.setenv("COLUMNS", "300")  # Rich reads it at each print: no text wrapped in its cell
    log_served(production, imdb_texts(56) + HOSTILE)
    hidden = cli("drift", "--window", "60")
    assert hidden.exit_code in (0, 3), hidden.output
    assert "farthest" in hidden.stdout and "--show-texts" in hidden.stdout
    assert "closes a tag" not in hidden.stdout and imdb_texts(1)[0][:40] not in hidden.stdout

    shown = cli("drift", "--window", "60", "--show-texts")
    assert shown.exit_code == hidden.exit_code, shown.output
    out = shown.stdout
    assert "[/bold] closes a tag that was never opened" in out
    assert "[link=https://evil.example/x]click me[/link] for a refund" in out
    assert "\\x1b[31mred\\x1b[0m and \\x1b]8;;https://evil.example" in out
    assert "C1 \\x9b31m CSI and NEL @AmericanAir =1+1" in out  # NEL is white space to str.split
    assert not any(c in out for c in "\x1b\x9b\x85\x07")  # no control reaches the terminal raw

    report = _json(cli("drift", "--window", "60", "--json", "--show-texts"))
    assert {f["text"] for f in report["farthest"]} >= set(HOSTILE)  # --json: the exact texts
    raw = cli("drift", "--window", "60", "--json", "--show-texts").stdout
    assert "\\u009b" in raw and "\x9b" not in raw and "\x1b" not in raw  # escaped in the JSON text

    history = cli("drift", "--history")
    assert history.exit_code == 0 and "Drift checks" in history.stdout


def test_store_text_false_no_text_anywhere_in_drift(  # type: ignore[no-untyped-def]
    cli, production: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With store.store_text false, drift shows, records and logs no text, even --show-texts
    over rows that were stored with their text before the setting changed."""
    monkeypatch.setenv("SENTOPS_DRIFT__TOP_K", "100")
    texts = imdb_texts(60)
    log_served(production, texts[:30])  # stored with their texts (store_text was on)
    monkeypatch.setenv("SENTOPS_STORE__STORE_TEXT", "false")
    settings = load_settings()
    log_served(settings, texts[30:])
    result = cli("drift", "--window", "60", "--json", "--show-texts")
    assert result.exit_code in (0, 3), result.output
    report = _json(result)
    assert report["texts"] == "not kept" and len(report["farthest"]) == 60
    assert all("text" not in f for f in report["farthest"])
    assert not any(t[:40] in result.stdout for t in texts)
    table = cli("drift", "--window", "60", "--show-texts")
    assert "texts are not kept (store.store_text is false)" in " ".join(table.stdout.split())
    assert not any(t[:40] in table.stdout for t in texts)

    history = cli("drift", "--history", "--json")
    assert not any(t[:40] in history.stdout for t in texts)
    store = InferenceStore(settings.store_url)
    try:
        with store.engine.connect() as conn:
            details = [r[0] for r in conn.exec_driver_sql("SELECT details FROM drift_checks")]
    finally:
        store.close()
    assert len(details) == 2 and not any(t[:40] in d for d in details for t in texts)
    assert all(json.loads(d)["farthest"] and "text" not in json.loads(d)["farthest"][0] for d in details)

    client = Registry(settings).client  # the monitoring run: metrics, no text in tags or params
    exp = client.get_experiment_by_name(f"{settings.mlflow.experiment}-monitoring")
    assert exp is not None
    for run in client.search_runs([exp.experiment_id]):
        values = json.dumps([run.data.tags, run.data.params])
        assert not any(t[:40] in values for t in texts)
        assert client.list_artifacts(run.info.run_id) == []


def test_repeated_mode_keeps_its_state_in_the_store(cli, production: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """drift.false_alarm_every: each check steps a CUSUM whose state is read back from the
    previous recorded check; texts already scored are not scored again."""
    monkeypatch.setenv("SENTOPS_DRIFT__FALSE_ALARM_EVERY", "30d")
    log_served(production, imdb_texts(60))
    first = _json(cli("drift", "--json"))
    assert first["mode"] == "repeated" and first["method"] == "calibrated"
    mon = first["monitor"]
    assert mon["new_rows"] == 60 and mon["checks_since_alarm"] == 1 and not mon["alarm"]
    assert mon["expected_checks_between_false_alarms"] == 720
    # h holds 720 checks for scores offset by the margin (this store's calibration set is small)
    assert 0 < mon["margin"] <= monitor.MAX_MARGIN
    assert mon["threshold"] == pytest.approx(monitor.cusum_threshold(720.0, monitor.CUSUM_K - mon["margin"]), rel=1e-6)
    again = cli("drift")  # nothing served since: the statistic stays, the count goes on
    assert again.exit_code == 0, again.output
    assert "mode: repeated" in again.stdout and "once every 30d" in " ".join(again.stdout.split())
    assert "(200 texts) is small for a window of 500" in " ".join(again.stdout.split())
    second = _json(cli("drift", "--json"))
    assert second["monitor"]["increment"] is None and second["monitor"]["checks_since_alarm"] == 3
    assert second["monitor"]["statistic"] == pytest.approx(mon["statistic"])
    log_served(production, tweet_texts(80))
    alarm = cli("drift", "--json")
    assert alarm.exit_code == EXIT_DRIFT, alarm.output
    state = _json(alarm)["monitor"]
    assert state["alarm"] and state["new_rows"] == 80 and state["checks_since_alarm"] == 0
    monkeypatch.delenv("SENTOPS_DRIFT__FALSE_ALARM_EVERY")
    single = cli("drift")
    assert "mode: single check" in single.stdout and "probability 0.01" in " ".join(single.stdout.split())


def test_reference_without_calibration_set_is_checked_uncalibrated(cli, production: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A reference logged before calibration sets (none stored) keeps working: the
    permutation test decides and the report says the check is uncalibrated."""
    monkeypatch.setenv("SENTOPS_DRIFT__CALIBRATION_SAMPLES", "0")
    meta = _json(cli("embed-reference", "--version", "1", "--json"))
    assert meta["calibration_count"] == 0  # the calibration.npz trained with it no longer counts
    log_served(production, imdb_texts(60))
    report = _json(cli("drift", "--json"))
    assert report["method"] == "mmd_nn" and report["calibrated"] is None
    assert report["guarantee"].startswith("uncalibrated")
    table = cli("drift")
    assert table.exit_code == 0 and "uncalibrated" in table.stdout
