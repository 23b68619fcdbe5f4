"""Which served texts to label first (``sentiment_ops.labeling``): a real tiny model trained
and registered through ``sentops train`` (its drift reference embedded by the torch
backend), its real predictions and embeddings logged in a real store, and the strategies
over that window."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_support import clean_env, promote
from typer.testing import CliRunner

from sentiment_ops.cli.main import app as cli_app
from sentiment_ops.config import Settings, load_settings
from sentiment_ops.data import load_corpus
from sentiment_ops.drift.reference import embed_as_served
from sentiment_ops.errors import DataError
from sentiment_ops.feedback import TextsNotKeptError
from sentiment_ops.labeling import Strategy
from sentiment_ops.labeling.queue import LabelQueue, Selection, choose_to_label
from sentiment_ops.labeling.strategies import kmeans, margins, select
from sentiment_ops.store import InferenceStore, PredictionRecord, records_from
from sentiment_ops.tracking.registry import Registry

GIBBERISH = [
    "zxqv blorp 8843 #### qqq",
    "kkkk jjjj 0000 @@@@ ~~~~",
    "ptth wxv 7777 %%%% ^^^^ zzzz",
    "lorem qzx vbn mmm 42 42 42",
    "ññññ øøøø ßßßß ÿÿÿÿ",
    "x1 y2 z3 w4 v5 u6 t7 s8",
]


@pytest.fixture(scope="module")
def labeling_home(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`sentops train` (tiny model, torch reference) once for this module; version 1 is
    promoted to production."""
    home = tmp_path_factory.mktemp("labeling-home")
    with pytest.MonkeyPatch.context() as mp:
        clean_env(mp, home)
        mp.setenv("SENTOPS_TRAIN__BASE_MODEL", str(tiny_model_dir))
        mp.setenv("SENTOPS_SERVE__BACKEND", "torch")
        result = CliRunner().invoke(cli_app, ["train", "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        promote(1)
    return {"home": home, **json.loads(result.stdout)}


@pytest.fixture()
def settings(labeling_home: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The module's registry, this test's own store, the torch serving backend."""
    monkeypatch.setenv("SENTOPS_HOME", str(labeling_home["home"]))
    monkeypatch.setenv("SENTOPS_SERVE__BACKEND", "torch")
    monkeypatch.setenv("SENTOPS_STORE__URL", f"sqlite:///{tmp_path / 'store.db'}")
    return load_settings()


@pytest.fixture()
def store(settings: Settings) -> Iterator[InferenceStore]:
    st = InferenceStore(settings.store_url)
    yield st
    st.close()


@pytest.fixture(scope="module")
def model(labeling_home: dict[str, Any]) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        clean_env(mp, labeling_home["home"])
        return Registry(load_settings()).load_model(1)


def serve(store: InferenceStore, model: Any, texts: list[str]) -> list[PredictionRecord]:
    """Log ``texts`` as the server would: the model's labels, probabilities and embeddings."""
    pred = embed_as_served(model, texts, "torch")
    assert pred.embeddings is not None
    records = [
        PredictionRecord(
            model_name="sentiment-classifier",
            model_version=1,
            alias="production",
            text=t,
            prediction=int(pred.labels[i]),
            probability=float(pred.probabilities[i, 1]),
            confidence=float(pred.confidences[i]),
            embedding=pred.embeddings[i],
            backend="torch",
        )
        for i, t in enumerate(texts)
    ]
    store.add_predictions(records)
    return records


def choose(settings: Settings, store: InferenceStore, strategy: Strategy | str, n: int, **kw: Any) -> LabelQueue:
    """``choose_to_label`` with the settings' registry."""
    return choose_to_label(settings, Registry(settings), store, Selection(Strategy(strategy), n, **kw))


def ids(queue: Any) -> list[str]:
    return [item.record.id for item in queue.items]


def test_uncertain_picks_the_rows_nearest_the_boundary(settings: Settings, store: InferenceStore, model: Any) -> None:
    records = serve(store, model, load_corpus("tweets").test.texts[:60])
    queue = choose(settings, store, "uncertain", 10)
    assert queue.pool == 60 and queue.version == 1 and len(queue.items) == 10
    by_margin = sorted(records, key=lambda r: abs(float(r.probability or 0) - 0.5))
    chosen = {r.id for r in by_margin[:10]}
    assert set(ids(queue)) == chosen
    worst_chosen = max(abs(float(i.record.probability or 0) - 0.5) for i in queue.items)
    assert all(abs(float(r.probability or 0) - 0.5) >= worst_chosen for r in records if r.id not in chosen)
    scores = [i.score for i in queue.items]
    assert scores == sorted(scores)  # nearest the boundary first


def test_novel_ranks_off_domain_texts_first(settings: Settings, store: InferenceStore, model: Any) -> None:
    reviews = load_corpus("imdb").test.texts[:40]  # the reference is IMDB (validation split)
    off = GIBBERISH + load_corpus("tweets").test.texts[:6]
    serve(store, model, reviews[:20] + off + reviews[20:])
    queue = choose(settings, store, Strategy.NOVEL, len(off))
    assert {i.record.text for i in queue.items} == set(off)
    distances = [i.score for i in queue.items]
    assert distances == sorted(distances, reverse=True)


def test_mixed_covers_more_of_the_window_than_uncertain(settings: Settings, store: InferenceStore, model: Any) -> None:
    """A duplicated block (one text resent with different spacing: the same tokens) holding
    the text closest to the boundary takes all of uncertain's picks; mixed spends one label
    on it and the rest across the window."""
    texts = load_corpus("tweets").test.texts[:60] + load_corpus("imdb").test.texts[:20]
    pred = embed_as_served(model, texts, "torch")
    base = texts[int(np.argmin(margins(pred.probabilities[:, 1])))]
    others = [t for t in texts if t != base]
    block = [base + " " * (i + 1) for i in range(15)]
    serve(store, model, others[:30] + block + others[30:])
    n = 10
    uncertain = choose(settings, store, "uncertain", n)
    mixed = choose(settings, store, "mixed", n)
    group = {t: "block" for t in block} | {t: t for t in others}  # each other text is its own group
    assert all(i.record.text in block for i in uncertain.items)  # the block holds the n nearest 0.5
    assert sum(i.record.text in block for i in mixed.items) == 1
    assert len({group[i.record.text] for i in mixed.items}) == n > len({group[i.record.text] for i in uncertain.items})
    assert len({i.cluster for i in mixed.items}) == n  # one pick per cluster


def test_same_seed_same_selection(settings: Settings, store: InferenceStore, model: Any) -> None:
    serve(store, model, load_corpus("tweets").test.texts[:80])
    for strategy in Strategy:
        first = choose(settings, store, strategy, 12, seed=3)
        again = choose(settings, store, strategy, 12, seed=3)
        assert ids(first) == ids(again), strategy
    assert ids(choose(settings, store, "random", 12, seed=3)) != ids(choose(settings, store, "random", 12, seed=4))
    assert ids(choose(settings, store, "mixed", 12, seed=3)) != ids(choose(settings, store, "mixed", 12, seed=4))


def test_labelled_and_repeated_texts_are_left_out(settings: Settings, store: InferenceStore, model: Any) -> None:
    tweets = load_corpus("tweets").test.texts[:30]
    records = serve(store, model, tweets)
    store.set_feedback(records[0].id, 1)  # labeled on its own row
    store.add_predictions(records_from([tweets[1]], [0], "sentiment-classifier"))  # imported with a label
    again = serve(store, model, [tweets[2]])[0]  # served twice: one row, the newest
    store.add_predictions([PredictionRecord("sentiment-classifier", 1, "", 1, 0.5, 0.5, source="api")])  # no text
    for strategy in Strategy:
        queue = choose(settings, store, strategy, 100)
        chosen = ids(queue)
        assert len(chosen) == 28 == queue.pool, strategy
        assert records[0].id not in chosen and records[1].id not in chosen
        assert again.id in chosen and records[2].id not in chosen
        assert (queue.labeled, queue.duplicates, queue.no_text, queue.no_embedding) == (2, 1, 1, 0)
    with pytest.raises(DataError, match="the number of texts to choose must be at least 1, got 0"):
        Selection(Strategy.MIXED, 0)
    with pytest.raises(DataError, match="window must be at least 1, got 0"):
        Selection(Strategy.MIXED, 5, window=0)
    with pytest.raises(DataError, match="seed must be 0 or more, got -1"):
        Selection(Strategy.MIXED, 5, seed=-1)
    assert Selection("novel", 5).strategy is Strategy.NOVEL  # type: ignore[arg-type]  # a name is taken too


def test_kmeans_finds_separate_blobs() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    x = np.vstack([c + rng.normal(size=(25, 4)) for c in centres])
    assign = kmeans(x, 4, np.random.default_rng(1))
    assert all(len(set(assign[i * 25 : (i + 1) * 25])) == 1 for i in range(4))
    assert len(set(assign)) == 4
    dupes = np.ones((10, 3))  # fewer distinct points than k: no empty or split cluster
    assert set(kmeans(dupes, 5, np.random.default_rng(0))) == {0}
    assert select(Strategy.MIXED, 3, 0, probabilities=np.full(10, 0.5), embeddings=dupes)[0].cluster == 0


def test_cli_export_select(
    settings: Settings, store: InferenceStore, model: Any, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    serve(store, model, load_corpus("tweets").test.texts[:50])
    out = tmp_path / "to_label.csv"
    result = cli("feedback", "export", "--select", "mixed", "--n", "7", "--seed", "2", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 7 and summary["strategy"] == "mixed" and summary["pool"] == 50
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ids(choose(settings, store, "mixed", 7, seed=2))

    for row, label in zip(rows, [0, 1, 1], strict=False):  # label three, import them back
        row["label"] = str(label)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert cli("feedback", "import", str(out)).exit_code == 0
    text = cli("feedback", "export", "--select", "uncertain", "--n", "100", str(tmp_path / "next.csv"))
    assert text.exit_code == 0, text.output
    assert "47 unlabeled served texts" in text.stdout and "3 already labeled" in " ".join(text.stdout.split())

    bad = cli("feedback", "export", "--select", "loudest", str(out))
    assert bad.exit_code == 2 and "random" in bad.output and "mixed" in bad.output
    stray = cli("feedback", "export", "--n", "5", str(out))
    assert stray.exit_code == 2 and "--select" in stray.output


def test_embedding_strategies_use_only_the_serving_backend(
    settings: Settings,
    store: InferenceStore,
    model: Any,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Rows embedded by torch are not compared in the ONNX space; novel without an ONNX
    reference says what to run (exit 66)."""
    serve(store, model, load_corpus("tweets").test.texts[:20])
    monkeypatch.setenv("SENTOPS_SERVE__BACKEND", "onnx")
    out_file = str(tmp_path / "x.jsonl")
    out = cli("feedback", "export", "--select", "mixed", "--n", "5", out_file, "--json")
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["rows"] == 0 and summary["no_embedding"] == 20 and summary["pool"] == 0
    assert (
        json.loads(
            cli("feedback", "export", "--select", "uncertain", "--n", "5", "--overwrite", out_file, "--json").stdout
        )["rows"]
        == 5
    )  # no embeddings needed
    novel = cli("feedback", "export", "--select", "novel", "--n", "5", "--overwrite", out_file)
    assert novel.exit_code == 66
    assert "no reference embeddings for the onnx serving backend" in novel.stderr
    assert "sentops embed-reference" in " ".join(novel.stderr.split())


def test_texts_not_kept_the_queue_says_so(
    settings: Settings,
    store: InferenceStore,
    model: Any,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """With store.store_text false there is nothing to label by text: the queue says so
    (one line, exit 65) instead of offering empty texts or hashes, even over rows stored
    with their text before the setting changed."""
    serve(store, model, load_corpus("tweets").test.texts[:20])
    monkeypatch.setenv("SENTOPS_STORE__STORE_TEXT", "false")
    with pytest.raises(TextsNotKeptError, match=r"texts are not kept \(store.store_text is false\)"):
        choose(load_settings(), store, "uncertain", 5)
    out = tmp_path / "to_label.csv"
    result = cli("feedback", "export", "--select", "uncertain", "--n", "5", str(out))
    assert result.exit_code == 65 and "label predictions by id instead" in " ".join(result.stderr.split())
    assert not out.exists()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def test_store_undo_and_labeled_texts(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """What the queue and the page's undo need from the store, on SQLite and PostgreSQL."""
    from sentiment_ops.errors import NotFoundError
    from sentiment_ops.store import text_hash

    url = f"sqlite:///{tmp_path / 'store.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    st = InferenceStore(url)
    try:
        served = [PredictionRecord("m", 1, f"text {i}", 1, 0.6, 0.6) for i in range(3)]
        st.add_predictions([*served, *records_from(["imported text"], [0], "m")])
        assert st.set_feedback(served[0].id, 0) is True
        hashes = [text_hash(t) for t in ("text 0", "text 1", "imported text", "never seen")]
        assert st.labeled_hashes(hashes) == {text_hash("text 0"), text_hash("imported text")}
        assert st.clear_feedback(served[0].id) is True
        assert st.get(served[0].id).feedback_label is None and st.get(served[0].id).feedback_at is None
        assert st.clear_feedback(served[0].id) is False  # nothing to undo twice
        assert st.labeled_hashes(hashes) == {text_hash("imported text")}
        with pytest.raises(NotFoundError):
            st.clear_feedback("nope")
    finally:
        st.close()
