from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentiment_ops.data import clean_text, golden_test, load_corpus, read_labeled_file
from sentiment_ops.errors import DataError


def test_imdb_golden_split_is_frozen_and_disjoint() -> None:
    imdb = load_corpus("imdb")
    total = len(imdb.test) + len(imdb.validation) + len(imdb.train)
    assert (len(imdb.test), len(imdb.validation)) == (5000, 2000)
    assert 24_800 < total < 25_000  # duplicate reviews dropped once
    assert len(set(imdb.test.texts) | set(imdb.validation.texts) | set(imdb.train.texts)) == total
    assert set(imdb.test.texts).isdisjoint(imdb.train.texts)
    assert set(imdb.validation.texts).isdisjoint(imdb.train.texts)
    # roughly balanced, as a random split of a balanced corpus should be
    assert 0.45 < imdb.test.labels.mean() < 0.55
    assert golden_test().hash == imdb.test.hash
    assert golden_test(100).texts == imdb.test.texts[:100]
    assert all("<br" not in t for t in imdb.test.texts[:200])


def test_other_bundled_corpora() -> None:
    rt = load_corpus("rotten_tomatoes")
    assert len(rt.train) + len(rt.validation) + len(rt.test) == 8530
    tweets = load_corpus("tweets")
    total = len(tweets.train) + len(tweets.validation) + len(tweets.test)
    assert total <= 16186 + 6954  # neutral tweets (and repeated tweets) dropped
    assert total > 15_000
    assert set(np.unique(tweets.train.labels)) == {0, 1}


def test_sample_is_seeded() -> None:
    imdb = load_corpus("imdb")
    a, b, c = imdb.train.sample(50, 1), imdb.train.sample(50, 1), imdb.train.sample(50, 2)
    assert a.texts == b.texts and a.hash == b.hash
    assert a.texts != c.texts


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_read_files(tmp_path: Path, fmt: str) -> None:
    df = pd.DataFrame({"text": ["good film", "bad film", "great<br />stuff"], "label": ["positive", "negative", 1]})
    path = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")))
    else:
        df.assign(label=[1, 0, 1]).to_parquet(path)
    split = read_labeled_file(path)
    assert split.labels.tolist() == [1, 0, 1]
    assert split.texts[2] == "great stuff"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", "text,score\nhello,1\n", r"missing column\(s\) label"),
        ("badlabel.csv", "text,label\nok,1\nfine,maybe\n", r"row 3: label 'maybe'"),
        ("emptytext.csv", "text,label\nok,1\n,0\n", "row 3: empty or missing text"),
        ("empty.csv", "", "the file is empty"),
        ("header.csv", "text,label\n", "no rows"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{oops\n', "row 2: invalid JSON"),
        ("data.txt", "whatever", "unsupported file type"),
        ("broken.parquet", "not parquet at all", "cannot be read"),
    ],
)
def test_bad_files_name_file_and_row(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_labeled_file(path)
    assert str(path) in str(info.value)


def test_unknown_data_spec() -> None:
    with pytest.raises(DataError, match=r"unknown data 'nowhere\.csv'"):
        load_corpus("nowhere.csv")


def test_clean_text() -> None:
    assert clean_text("a<br /><br />b  \n c<BR>d") == "a b c d"


def test_hf_dataset_unreachable_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match=r"hf:no-such-owner/no-such-dataset: cannot be loaded"):
        load_corpus("hf:no-such-owner/no-such-dataset")


def test_hf_loader_on_a_local_dataset_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hf:<name>` goes through datasets.load_dataset; a local folder exercises it offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = [{"text": f"text {i} {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(30)]
    pd.DataFrame(rows[:20]).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(rows[20:]).to_csv(folder / "test.csv", index=False)
    corpus = load_corpus(f"hf:{folder}")
    assert len(corpus.train) + len(corpus.validation) + len(corpus.test) == 30
    assert set(corpus.train.labels.tolist()) <= {0, 1}
