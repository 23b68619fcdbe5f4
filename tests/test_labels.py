"""The class set of a label column: found in the data, or named by ``train.labels``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentiment_ops.config import load_settings
from sentiment_ops.data import load_corpus, read_labeled_file
from sentiment_ops.errors import ConfigError, DataError
from sentiment_ops.labels import BINARY, LabelSet


def _csv(tmp_path: Path, labels: list[object], name: str = "d.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame({"text": [f"text number {i}" for i in range(len(labels))], "label": labels}).to_csv(path, index=False)
    return path


def test_binary_spellings_stay_negative_positive(tmp_path: Path) -> None:
    split = read_labeled_file(_csv(tmp_path, ["1", "neg", "POSITIVE", 0, "negative"]))
    assert split.classes == BINARY
    assert split.labels.tolist() == [1, 0, 1, 0, 0]


def test_names_are_found_in_sentiment_order(tmp_path: Path) -> None:
    split = read_labeled_file(_csv(tmp_path, ["positive", "Neutral", "negative", "neutral", "positive"]))
    assert split.classes.names == ("negative", "Neutral", "positive")
    assert split.labels.tolist() == [2, 1, 0, 1, 2]
    assert split.label_counts() == {"negative": 1, "Neutral": 2, "positive": 2}


def test_other_names_are_alphabetical_and_jsonl_parquet_agree(tmp_path: Path) -> None:
    labels = ["sports", "politics", "arts", "sports"]
    csv = read_labeled_file(_csv(tmp_path, labels))
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"text": f"t{i}", "label": v}) + "\n" for i, v in enumerate(labels)))
    parquet = tmp_path / "d.parquet"
    pd.DataFrame({"text": [f"t{i}" for i in range(4)], "label": labels}).to_parquet(parquet)
    for split in (csv, read_labeled_file(jsonl), read_labeled_file(parquet)):
        assert split.classes.names == ("arts", "politics", "sports")
        assert split.labels.tolist() == [2, 1, 0, 2]


def test_star_ratings_are_classes_by_their_value(tmp_path: Path) -> None:
    split = read_labeled_file(_csv(tmp_path, [5, 1, 3, 4, 2, 5]))
    assert split.classes.names == ("1", "2", "3", "4", "5")
    assert split.labels.tolist() == [4, 0, 2, 3, 1, 4]


def test_integers_with_names_given_are_indices(tmp_path: Path) -> None:
    names = ("negative", "neutral", "positive")
    split = read_labeled_file(_csv(tmp_path, [0, 2, 1, "neutral"]), names)
    assert split.classes.names == names
    assert split.labels.tolist() == [0, 2, 1, 1]
    with pytest.raises(DataError, match=r"row 3: label '3' is not one of negative/neutral/positive") as info:
        read_labeled_file(_csv(tmp_path, [0, 3, 1], "bad.csv"), names)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([1, "maybe", 0], r"row 3: label 'maybe' is not an index like the first row's"),
        (["a"] * 4, "a classifier needs at least two classes"),
        ([f"c{i}" for i in range(25)], r"row 22: label 'c20' makes more than 20 classes"),
        (["good", None, "bad"], r"row 3: label nan is not a class name or index"),
    ],
)
def test_bad_label_columns_name_the_row(tmp_path: Path, labels: list[object], message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        read_labeled_file(_csv(tmp_path, labels))
    assert "\n" not in str(info.value)


def test_label_set_reads_names_indices_and_refuses_others() -> None:
    three = LabelSet(("negative", "neutral", "positive"))
    assert [three.index(v) for v in ("NEUTRAL", 2, 1.0, "0", np.int64(1))] == [1, 2, 1, 0, 1]
    assert [three.index(v) for v in ("neg", 3, -1, 1.5, True, None, "")] == [None] * 7
    assert LabelSet.from_meta({}) == BINARY  # a model saved before class sets
    assert LabelSet.from_meta(three.to_meta()) == three
    with pytest.raises(DataError, match="repeat"):
        LabelSet(("a", "A"))


def test_train_labels_setting_is_checked(tmp_path: Path) -> None:
    assert load_settings(overrides={"train.labels": ["neg", "neu", "pos"]}).train.labels == ["neg", "neu", "pos"]
    with pytest.raises(ConfigError, match=r"train\.labels"):
        load_settings(overrides={"train.labels": ["only"]})


def test_tweets3_is_the_whole_file_with_its_own_frozen_split() -> None:
    three, two = load_corpus("tweets3"), load_corpus("tweets")
    assert three.classes.names == ("negative", "neutral", "positive")
    counts = three.train.label_counts()
    assert counts["neutral"] > 10_000
    total = sum(len(s) for s in (three.train, three.validation, three.test))
    assert total > sum(len(s) for s in (two.train, two.validation, two.test)) + 14_000
    assert (len(three.test), len(three.validation)) == (3000, 2000)
    assert set(three.test.texts).isdisjoint(three.train.texts)
    assert load_corpus("tweets3").test.hash == three.test.hash
    assert two.classes == BINARY


def test_a_three_class_model_is_trained_scored_and_saved_with_its_classes(trained3: dict, settings: object) -> None:
    """Per-class metrics and macro-F1 on the test split, golden scored on the two poles, the
    classes in sentops.json and a 3 x 3 confusion matrix among the run's plots."""
    from mlflow import MlflowClient

    from sentiment_ops.modeling import SentimentModel
    from sentiment_ops.tracking.registry import Registry

    m = trained3["metrics"]
    for name in ("negative", "neutral", "positive"):
        assert 0.0 <= m[f"test_f1_{name}"] <= 1.0
    f1s = [m[f"test_f1_{n}"] for n in ("negative", "neutral", "positive")]
    assert m["test_macro_f1"] == pytest.approx(sum(f1s) / 3)
    assert 0.0 <= m["golden_accuracy"] <= 1.0 and "golden_f1_neutral" not in m  # binary hold-out
    assert trained3["data"].endswith("three.csv")
    registry = Registry(settings)  # type: ignore[arg-type]
    model_dir = Path(registry.download_uri(1).removeprefix("file://"))
    model = SentimentModel.from_dir(next(model_dir.rglob("sentops.json")).parent)
    assert model.classes.names == ("negative", "neutral", "positive")
    pred = model.predict(["wonderful brilliant best", "the schedule update", "awful boring"])
    assert pred.probabilities.shape == (3, 3)
    assert np.allclose(pred.probabilities.sum(axis=1), 1.0)
    client = MlflowClient(tracking_uri=settings.tracking_uri)  # type: ignore[attr-defined]
    run = client.get_run(trained3["run_id"])
    assert run.data.params["labels"] == "negative,neutral,positive"
    files = {f.path for f in client.list_artifacts(trained3["run_id"], "plots")}
    assert {"plots/confusion_matrix.png", "plots/roc_curve.png", "plots/pr_curve.png"} <= files


def test_classes_without_both_poles_skip_the_golden_hold_out(cli: object, tiny_env: dict, tmp_path: Path) -> None:
    data = _csv(tmp_path, [1, 2, 3] * 40)
    result = cli("train", "--data", str(data), "--labels", "one star,two stars,three stars", "--json")  # type: ignore[operator]
    assert result.exit_code != 0  # integers 1..3 with three names: 3 is no index
    assert "row 4: label '3' is not one of one star/two stars/three stars" in result.output
    result = cli("train", "--data", str(data), "--json")  # type: ignore[operator]
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert "test_macro_f1" in metrics and not any(k.startswith("golden_") for k in metrics)
