"""``sentops score --spark local[2]``: the batch job on a real Apache Spark (pyspark from PyPI,
a Java runtime from Debian's packages: scripts/ci_services.sh) through MLflow's own
``spark_udf`` over the logged model, against the local path on the same texts."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiment_ops.config import Settings, load_settings
from sentiment_ops.data import load_corpus
from sentiment_ops.scoring.guard import MARKER

N_TEXTS = 2_000
# rows the local path calls bad, planted at known positions (1-based rows)
BAD = {7: "", 500: "   ", 1_234: "fine until \x07 the bell", 1_999: "DEL \x7f here"}

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None and not os.environ.get("CI"),
    reason="no Java runtime (scripts/ci_services.sh installs one; CI fails instead of skipping)",
)


@pytest.fixture()
def production(cli: Callable[..., Any], trained: dict[str, Any]) -> Settings:
    result = cli("promote", "--version", "1", "--json")
    assert result.exit_code == 0, result.output
    return load_settings()


def corpus(n: int) -> list[str]:
    """Raw review texts (markup and all), cycled to ``n``, with the BAD rows planted."""
    c = load_corpus("imdb")
    pool = c.train.texts + c.test.texts
    texts = [pool[i % len(pool)] for i in range(n)]
    for row, text in BAD.items():
        if row <= n:
            texts[row - 1] = text
    return texts


def test_spark_local2_scores_2000_texts_as_the_local_path(
    cli: Callable[..., Any], production: Settings, tmp_path: Path
) -> None:
    texts = corpus(N_TEXTS)
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(N_TEXTS)), "review": texts}), src)

    # the local engine on the same fp32 weights the logged pyfunc runs (torch)
    local_out = tmp_path / "local.parquet"
    result = cli("score", str(src), "-o", str(local_out), "--text-column", "review", "--backend", "torch", "--json")
    assert result.exit_code == 65, result.output  # bad rows: the good ones are written
    local = json.loads(result.stdout)

    spark_out = tmp_path / "spark.parquet"
    result = cli("score", str(src), "-o", str(spark_out), "--text-column", "review", "--spark", "local[2]", "--json")
    assert result.exit_code == 65, result.output
    on_spark = json.loads(result.stdout)

    assert (on_spark["rows"], on_spark["scored"], on_spark["bad"]) == (N_TEXTS, N_TEXTS - len(BAD), len(BAD))
    assert (on_spark["engine"], on_spark["backend"], on_spark["workers"]) == ("spark", "torch", 2)
    assert on_spark["model_version"] == 1
    # the same bad rows with the same messages as the local path
    assert on_spark["errors"] == local["errors"]
    assert [e["line"] for e in on_spark["errors"]] == sorted(BAD)

    assert spark_out.is_dir() and not list(tmp_path.glob(".spark.parquet.*.partial"))
    got = pq.read_table(spark_out).to_pandas().sort_values("row").reset_index(drop=True)
    want = pq.read_table(local_out).to_pandas().sort_values("row").reset_index(drop=True)
    columns = ["row", "label", "label_name", "probability", "confidence", "p_negative", "p_positive"]
    assert list(got.columns) == list(want.columns) == columns
    assert got["row"].tolist() == [r for r in range(1, N_TEXTS + 1) if r not in BAD]
    assert got["row"].tolist() == want["row"].tolist()
    # spark.rows_match: every label equal to the local path's
    assert (got["label"] == want["label"]).all()
    assert (got["label_name"] == want["label_name"]).all()
    np.testing.assert_allclose(got["probability"], want["probability"], atol=1e-5)
    np.testing.assert_allclose(got[columns[-2:]], want[columns[-2:]], atol=1e-5)


def test_spark_writes_one_probability_column_per_class(
    cli: Callable[..., Any], trained3: dict[str, Any], tmp_path: Path
) -> None:
    """A negative / neutral / positive model on Spark: the UDF's columns come from the logged
    model's classes (no P(positive) column), as the local path writes them."""
    assert cli("promote", "--version", "1").exit_code == 0
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus(40) if t.strip() and "\x07" not in t))
    outs = {}
    for engine, extra in (("spark", ["--spark", "local[2]"]), ("local", ["--backend", "torch", "--workers", "1"])):
        out = tmp_path / f"{engine}.parquet"
        result = cli("score", str(src), "-o", str(out), "--json", *extra)
        assert result.exit_code == 0, result.output
        outs[engine] = pq.read_table(out).to_pandas().sort_values("row").reset_index(drop=True)
    probs = ["p_negative", "p_neutral", "p_positive"]
    assert list(outs["spark"].columns) == ["row", "label", "label_name", "confidence", *probs]
    assert list(outs["spark"].columns) == list(outs["local"].columns)
    assert set(outs["spark"]["label_name"]) <= {"negative", "neutral", "positive"}
    np.testing.assert_allclose(outs["spark"][probs].sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(outs["spark"][probs], outs["local"][probs], atol=1e-5)


def test_spark_embedding_and_a_rerun_replaces_the_output(
    cli: Callable[..., Any], production: Settings, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus(30)))
    out = tmp_path / "out.parquet"
    out.mkdir()
    (out / "old.txt").write_text("a folder of someone's, to be replaced as asked")
    # the first run replaces that folder (--overwrite); the second replaces the first's
    # output without it (its marker), through Spark's file system (a file: URI), rows not doubled
    for dest, extra in ((str(out), ["--overwrite"]), (out.as_uri(), [])):
        result = cli("score", str(src), "-o", dest, "--spark", "local[2]", "--embedding", "--json", *extra)
        assert result.exit_code == 65, result.output  # row 7 is blank
        marker = json.loads((out / MARKER).read_text())
        assert marker["tool"] == "sentops score" and marker["model_version"] == 1
        assert not (out / "old.txt").exists()
    table = pq.read_table(out).to_pandas()
    assert sorted(table["row"]) == [r for r in range(1, 31) if r != 7]
    dims = {len(e) for e in table["embedding"]}
    assert len(dims) == 1 and dims.pop() > 0


def test_spark_backend_onnx_runs_the_int8_graph_as_the_local_path(
    cli: Callable[..., Any], production: Settings, tmp_path: Path
) -> None:
    """``--backend onnx`` on Spark: the logged int8 graph through the pyfunc's model_config,
    the local default's model."""
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": corpus(300)}), src)
    outs = {}
    for engine, extra in (("local", ["--workers", "1"]), ("spark", ["--spark", "local[2]", "--backend", "onnx"])):
        out = tmp_path / f"{engine}.parquet"
        result = cli("score", str(src), "-o", str(out), "--json", *extra)
        assert result.exit_code == 65, result.output  # row 7 is blank
        assert json.loads(result.stdout)["backend"] == "onnx"
        outs[engine] = pq.read_table(out).to_pandas().sort_values("row").reset_index(drop=True)
    got, want = outs["spark"], outs["local"]
    assert got["row"].tolist() == want["row"].tolist()
    # int8 activations are quantised per pass, and the passes group other texts on Spark:
    # close, not equal (as the server's micro-batches against sentops score)
    np.testing.assert_allclose(got["probability"], want["probability"], atol=2e-3)
    clear = (want["probability"] - 0.5).abs() > 2e-3
    assert (got["label"][clear] == want["label"][clear]).all()


def test_spark_refuses_the_local_engine_options_and_missing_columns(
    cli: Callable[..., Any], production: Settings, tmp_path: Path
) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"review": ["a fine film"]}), src)
    result = cli("score", str(src), "-o", str(tmp_path / "o.parquet"), "--spark", "local[1]", "--log")
    assert result.exit_code == 2
    assert "--log: not with --engine spark" in result.output
    result = cli("score", str(src), "-o", str(tmp_path / "o.parquet"), "--spark", "local[1]")
    assert result.exit_code == 65
    assert "no column 'text' (columns: review)" in result.output
    assert not (tmp_path / "o.parquet").exists()


def test_spark_never_writes_over_the_input_or_a_users_folder(
    cli: Callable[..., Any], production: Settings, tmp_path: Path
) -> None:
    """``-o ~/data``: a folder sentops did not write is refused (a plain path before Spark
    starts, a URI through Spark's file system), its files intact; a folder holding the input
    or inside a folder input is refused even with --overwrite."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus(5)))
    data = tmp_path / "data"
    data.mkdir()
    (data / "thesis.tex").write_text("years of work")
    (data / "reviews.jsonl").write_text(src.read_text())

    def intact() -> None:
        assert sorted(p.name for p in data.iterdir()) == ["reviews.jsonl", "thesis.tex"]
        assert (data / "thesis.tex").read_text() == "years of work"
        assert (data / "reviews.jsonl").read_text() == src.read_text()
        assert not list(tmp_path.glob(".data.*"))

    for dest in (str(data), data.as_uri()):
        result = cli("score", str(src), "-o", dest, "--spark", "local[1]")
        assert result.exit_code == 2, result.output
        assert "that sentops score did not write is in the way" in result.stderr and "--overwrite" in result.stderr
        intact()
    refused = [
        (str(data / "reviews.jsonl"), str(data)),  # the output folder holds the input
        (str(data / "reviews.jsonl"), data.as_uri()),
        (str(data), str(data / "scores")),  # inside a folder input
        (data.as_uri(), str(data)),
    ]
    for source, dest in refused:
        result = cli("score", source, "-o", dest, "--spark", "local[1]", "--overwrite")
        assert result.exit_code == 2, (source, dest, result.output)
        assert "the output is the input" in result.stderr
        intact()
