"""``sentops score``: batch inference of CSV / JSONL / Parquet files into Parquet, on a real
SQLite MLflow, a real inference store and the tiny model (its logged ONNX int8 graph)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiment_ops.config import Settings, load_settings
from sentiment_ops.data import load_corpus
from sentiment_ops.errors import DataError
from sentiment_ops.inference.passes import Prediction, forward_grouped
from sentiment_ops.scoring import (
    InProcessEngine,
    OutputRefusedError,
    ScoreJob,
    ScoreProgress,
    output_schema,
    score_file,
)
from sentiment_ops.scoring.guard import PARQUET_KEY, written_by_score
from sentiment_ops.scoring.partial import PartialRun
from sentiment_ops.scoring.reader import read_chunks
from sentiment_ops.tracking.artifacts import logged_predictor
from sentiment_ops.tracking.registry import Registry

COLUMNS = ["row", "label", "label_name", "probability", "confidence"]


def texts(n: int, offset: int = 0) -> list[str]:
    return load_corpus("imdb").test.texts[offset : offset + n]


def write_csv(path: Path, values: list[str], column: str = "text") -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", column])
        writer.writerows([i, t] for i, t in enumerate(values))
    return path


@pytest.fixture()
def production(cli: Callable[..., Any], trained: dict[str, Any]) -> Settings:
    result = cli("promote", "--version", "1", "--json")
    assert result.exit_code == 0, result.output
    return load_settings()


def served(settings: Settings, values: list[str]) -> Prediction:
    """What the server answers for ``values``: the logged graph, the server's pass rule."""
    predictor = logged_predictor(Registry(settings).download_uri(1), threads=1)
    assert predictor is not None
    return forward_grouped(predictor, predictor.encode(values), max_tokens=settings.serve.batch_max_tokens)


# -- reading, no model ------------------------------------------------------------------------
def test_csv_rows_keep_their_lines_across_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b'text,n\n"two\nlines",1\n,2\nok \x07 bell,3\nbad \xff byte,4\n"fine",5\nshort\n')
    (chunk,) = list(read_chunks(path))
    assert chunk.rows == [1, 5] and chunk.texts == ["two\nlines", "fine"]
    errors = {e.line: e.message for e in chunk.errors}
    assert set(errors) == {4, 5, 6, 8}
    assert errors[4] == "empty text"
    assert "control character U+0007" in errors[5]
    assert "undecodable byte 0xFF" in errors[6]
    assert "expected 2 fields, found 1" in errors[8]
    assert chunk.last_row == 6


def test_jsonl_and_chunks(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [json.dumps({"review": f"text {i}"}) for i in range(5)]
    lines[2] = "{not json"
    path.write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n")
    chunks = list(read_chunks(path, "review", chunk_rows=2))
    assert [c.rows for c in chunks] == [[1, 2], [4], [5]]
    assert [(e.line, e.message[:12]) for e in chunks[1].errors] == [(3, "invalid JSON")]
    assert [c.last_row for c in chunks] == [2, 4, 5]
    resumed = list(read_chunks(path, "review", chunk_rows=2, skip_rows=2))
    assert [c.rows for c in resumed] == [[4], [5]]


def test_a_missing_text_column_is_one_data_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["fine"], column="body")
    with pytest.raises(DataError, match=r"no column 'text' .*id, body.*--text-column"):
        list(read_chunks(path))
    with pytest.raises(DataError, match=r"unsupported file type \.xlsx"):
        list(read_chunks(tmp_path / "in.xlsx"))


def test_a_partial_run_resumes_only_with_the_same_key(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    first = PartialRun(out, {"input": 1, "version": 1})
    first.open()
    first.add(output_schema(None).empty_table(), 10, {"rows": 10}, [])
    same = PartialRun(out, {"input": 1, "version": 1})
    same.open()
    assert same.resumed and same.last_row == 10
    other = PartialRun(out, {"input": 1, "version": 2})  # another model version: start over
    other.open()
    assert not other.resumed and other.last_row == 0 and not list(other.dir.glob("part-*"))
    other.finish(output_schema(None), {"tool": "sentops score"})
    assert pq.read_table(out).num_rows == 0 and not other.dir.exists()
    assert written_by_score(out)  # the marker: in the file's Parquet metadata


def test_a_strangers_folder_where_the_parts_go_is_refused_not_emptied(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    theirs = tmp_path / "out.parquet.partial"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(OutputRefusedError, match=r"out\.parquet\.partial: in the way of the run's parts"):
        PartialRun(out, {"input": 1}).open()
    assert (theirs / "notes.txt").read_text() == "mine"


# -- end to end -------------------------------------------------------------------------------
def test_csv_jsonl_parquet_score_as_served(cli: Callable[..., Any], production: Settings, tmp_path: Path) -> None:
    values = texts(40)
    expected = served(production, values)
    inputs = {
        "csv": write_csv(tmp_path / "in.csv", values),
        "jsonl": tmp_path / "in.jsonl",
        "parquet": tmp_path / "in.parquet",
    }
    inputs["jsonl"].write_text("".join(json.dumps({"review": t}) + "\n" for t in values))
    pq.write_table(pa.table({"review": values}), inputs["parquet"])
    for kind, path in inputs.items():
        out = tmp_path / f"{kind}.parquet"
        args = ["score", str(path), "--output", str(out), "--workers", "1", "--json"]
        result = cli(
            *args, *(["--text-column", "review"] if kind != "csv" else []), *(["--embedding"] * (kind == "parquet"))
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert (summary["rows"], summary["scored"], summary["bad"]) == (40, 40, 0)
        assert summary["model_version"] == 1 and summary["alias"] == "production" and summary["backend"] == "onnx"
        table = pq.read_table(out).to_pydict()
        assert list(table)[:5] == COLUMNS
        assert table["row"] == list(range(1, 41))
        assert table["label"] == expected.labels.tolist()
        assert table["label_name"] == [("negative", "positive")[i] for i in expected.labels]
        # int8 activations are quantised per pass, so a text's numbers move slightly with the
        # texts that share its pass (in the server's micro-batches too): close, not equal
        np.testing.assert_allclose(table["probability"], expected.probabilities[:, 1], atol=1e-3)
        np.testing.assert_allclose(table["confidence"], expected.confidences, atol=1e-3)
        probs = np.array([table["p_negative"], table["p_positive"]]).T
        np.testing.assert_allclose(probs, expected.probabilities, atol=1e-3)
        if kind == "parquet":
            assert expected.embeddings is not None
            np.testing.assert_allclose(np.array(table["embedding"]), expected.embeddings, atol=2e-2)
        else:
            assert "embedding" not in table
        assert not out.with_name(out.name + ".partial").exists()


def test_bad_rows_are_reported_with_lines_and_the_rest_scored(
    cli: Callable[..., Any], production: Settings, tmp_path: Path
) -> None:
    good = ["A moving, beautifully acted film.", "Dull.", "I loved every minute of it", "Worst plot ever"]
    path = tmp_path / "in.csv"
    rows = [f'"{t}"'.encode() for t in good[:2]] + [b'""', b"bell \x07 ring", b"not \xe9 utf-8"]
    path.write_bytes(b"text\n" + b"\n".join(rows + [f'"{t}"'.encode() for t in good[2:]]) + b"\n")
    out = tmp_path / "out.parquet"
    result = cli("score", str(path), "--output", str(out), "--workers", "1")
    assert result.exit_code == 65
    assert "3 bad row(s)" in result.stderr
    lines = [line for line in result.stderr.splitlines() if ": line " in line]
    assert [line.split(": line ")[1].split(":")[0] for line in lines] == ["4", "5", "6"]
    assert "empty text" in lines[0] and "U+0007" in lines[1] and "undecodable byte 0xE9" in lines[2]
    table = pq.read_table(out).to_pydict()
    assert table["row"] == [1, 2, 6, 7]
    assert table["label"] == served(production, good).labels.tolist()


class CountingEngine(InProcessEngine):
    """The local engine, counting the texts it is given (a rerun must not rescore)."""

    scored = 0

    def predict(self, batches: Iterable[list[str]]) -> Iterator[Prediction]:
        for pred in super().predict(batches):
            CountingEngine.scored += len(pred.labels)
            yield pred


class Interrupt(Exception):
    pass


def test_output_appears_when_complete_and_a_rerun_resumes(production: Settings, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", texts(30))
    predictor = logged_predictor(Registry(production).download_uri(1), threads=1)
    assert predictor is not None
    out = tmp_path / "out.parquet"

    def stop_after_first_chunk(p: ScoreProgress) -> None:  # Ctrl-C once the first chunk is on disk
        if (tmp_path / "out.parquet.partial" / "part-000000.parquet").exists():
            raise Interrupt

    engine = CountingEngine(predictor, production.serve.batch_max_tokens)
    with pytest.raises(Interrupt):
        score_file(production, ScoreJob(path, out), chunk_rows=10, engine=engine, progress=stop_after_first_chunk)
    assert not out.exists() and (tmp_path / "out.parquet.partial").is_dir()
    assert CountingEngine.scored == 10

    CountingEngine.scored = 0
    summary = score_file(production, ScoreJob(path, out), chunk_rows=10, engine=engine)
    assert summary.resumed_rows == 10 and summary.rows == 30 and summary.scored == 30
    assert CountingEngine.scored == 20  # the first chunk was not scored again
    assert out.exists() and not (tmp_path / "out.parquet.partial").exists()

    whole = score_file(production, ScoreJob(path, tmp_path / "whole.parquet"), chunk_rows=10, engine=engine)
    assert whole.resumed_rows == 0
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "whole.parquet"))


def test_a_file_put_in_the_way_during_a_run_is_kept_and_overwrite_resumes(production: Settings, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", texts(30))
    predictor = logged_predictor(Registry(production).download_uri(1), threads=1)
    assert predictor is not None
    out = tmp_path / "out.parquet"
    engine = CountingEngine(predictor, production.serve.batch_max_tokens)

    notes = "someone's notes, saved there while the run went on"

    def save_notes_after_first_chunk(p: ScoreProgress) -> None:
        if (tmp_path / "out.parquet.partial" / "part-000000.parquet").exists() and not out.exists():
            out.write_text(notes)

    CountingEngine.scored = 0
    with pytest.raises(OutputRefusedError, match="a file that sentops score did not write is in the way"):
        score_file(production, ScoreJob(path, out), chunk_rows=10, engine=engine, progress=save_notes_after_first_chunk)
    assert out.read_text() == notes and CountingEngine.scored == 30  # refused at the end, the parts kept
    with pytest.raises(OutputRefusedError):  # and now at the start
        score_file(production, ScoreJob(path, out), chunk_rows=10, engine=engine)
    assert out.read_text() == notes

    CountingEngine.scored = 0  # --overwrite resumes after the kept parts
    summary = score_file(production, ScoreJob(path, out, overwrite=True), chunk_rows=10, engine=engine)
    assert summary.resumed_rows == 30 and summary.scored == 30 and CountingEngine.scored == 0
    assert pq.read_table(out).column("row").to_pylist() == list(range(1, 31)) and written_by_score(out)
    assert not (tmp_path / "out.parquet.partial").exists()


def test_the_output_is_never_the_input(cli: Callable[..., Any], production: Settings, tmp_path: Path) -> None:
    """The same path, a symlink to it, a hard link to it, a folder holding it: refused, even
    with --overwrite, and the input keeps its texts."""
    values = texts(20)
    src = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"text": values}), src)
    (tmp_path / "link.parquet").symlink_to(src)
    os.link(src, tmp_path / "hard.parquet")
    folder = tmp_path / "data.parquet"
    folder.mkdir()
    inside = folder / "reviews.parquet"
    pq.write_table(pa.table({"text": values}), inside)
    cases = [(src, src), (src, tmp_path / "link.parquet"), (src, tmp_path / "hard.parquet"), (inside, folder)]
    for source, dest in cases:
        for extra in ([], ["--overwrite"]):
            result = cli("score", str(source), "-o", str(dest), "--workers", "1", *extra)
            assert result.exit_code == 2, (dest, extra, result.output)
            assert "the output is the input" in result.stderr and "choose another output" in result.stderr
            assert pq.read_table(source).column("text").to_pylist() == values
    assert pq.read_table(tmp_path / "hard.parquet").column("text").to_pylist() == values
    assert (tmp_path / "link.parquet").is_symlink() and folder.is_dir()
    assert not list(tmp_path.glob("*.partial")) and not list(folder.glob("*.partial"))


def test_an_unrelated_output_is_refused_unless_overwrite_and_its_own_output_is_replaced(
    cli: Callable[..., Any], production: Settings, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", texts(12))
    theirs = tmp_path / "theirs.parquet"  # a Parquet file sentops did not write
    pq.write_table(pa.table({"precious": [1, 2, 3]}), theirs)
    folder = tmp_path / "folder.parquet"  # a user's folder
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    plain = tmp_path / "plain.parquet"  # not even Parquet
    plain.write_text("keep me too")
    for dest, kind in ((theirs, "a file"), (folder, "a folder"), (plain, "a file")):
        result = cli("score", str(src), "-o", str(dest), "--workers", "1")
        assert result.exit_code == 2, result.output
        assert f"{kind} that sentops score did not write is in the way" in result.stderr
        assert "--overwrite" in result.stderr
    assert pq.read_table(theirs).column("precious").to_pylist() == [1, 2, 3]
    assert (folder / "notes.txt").read_text() == "keep me" and plain.read_text() == "keep me too"
    assert not list(tmp_path.glob("*.partial"))

    for dest in (theirs, folder):  # asked for: replaced, now marked as ours
        result = cli("score", str(src), "-o", str(dest), "--workers", "1", "--overwrite", "--json")
        assert result.exit_code == 0, result.output
        assert pq.read_table(dest).column("row").to_pylist() == list(range(1, 13))
        assert PARQUET_KEY in (pq.read_schema(dest).metadata or {})
    assert dest.is_file()  # the folder was replaced by the output file

    # a rerun into its own output needs no --overwrite: the marker says sentops wrote it
    result = cli("score", str(src), "-o", str(theirs), "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    marker = json.loads(pq.read_schema(theirs).metadata[PARQUET_KEY])
    assert marker["tool"] == "sentops score" and marker["model_version"] == 1


def test_overwrite_replaces_a_symlink_never_what_it_points_to(
    cli: Callable[..., Any], production: Settings, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", texts(5))
    target = tmp_path / "elsewhere.txt"
    target.write_text("not an input, still not to be touched")
    link = tmp_path / "out.parquet"
    link.symlink_to(target)
    assert cli("score", str(src), "-o", str(link), "--workers", "1").exit_code == 2
    result = cli("score", str(src), "-o", str(link), "--workers", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not link.is_symlink() and pq.read_table(link).num_rows == 5
    assert target.read_text() == "not an input, still not to be touched"


def test_worker_processes_score_as_one_process(production: Settings, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", texts(1100))
    one = score_file(production, ScoreJob(path, tmp_path / "one.parquet", workers=1))
    two = score_file(production, ScoreJob(path, tmp_path / "two.parquet", workers=2))
    assert (one.workers, two.workers) == (1, 2) and two.scored == 1100
    a, b = pq.read_table(tmp_path / "one.parquet"), pq.read_table(tmp_path / "two.parquet")
    assert a.column("row").to_pylist() == b.column("row").to_pylist() == list(range(1, 1101))
    assert a.column("label").equals(b.column("label"))
    # two workers cut the file into smaller batches: other pass companions, so int8 close, not equal
    np.testing.assert_allclose(a.column("probability").to_numpy(), b.column("probability").to_numpy(), atol=1e-3)


def test_logged_batch_is_checked_by_drift_source_batch(
    cli: Callable[..., Any], production: Settings, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "in.csv", texts(60))
    result = cli("score", str(path), "--output", str(tmp_path / "out.parquet"), "--log", "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["logged"] == 60
    served_only = cli("drift", "--json")
    assert served_only.exit_code == 4  # a batch never mixes into the served window
    batch = cli("drift", "--source", "batch", "--permutations", "300", "--json")
    assert batch.exit_code in (0, 3), batch.output
    report = json.loads(batch.stdout)
    assert report["source"] == "batch" and report["n_rows"] == 60 and report["model_version"] == 1


def test_scoring_imports_without_torch() -> None:
    """The serve image (no torch) can score: the local engine runs the logged int8 graph."""
    import subprocess
    import sys

    code = "import sys, sentiment_ops.scoring, sentiment_ops.cli.score_cmd; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
