"""Feedback import / export: bad rows with line numbers, good rows kept, nothing twice."""

from __future__ import annotations

import csv
import json
import re
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentiment_ops.config import load_settings
from sentiment_ops.data import load_corpus
from sentiment_ops.errors import DataError
from sentiment_ops.feedback import (
    BadRowsError,
    ExportRefusedError,
    csv_cell,
    csv_text,
    export_feedback,
    import_feedback,
)
from sentiment_ops.store import InferenceStore, PredictionRecord, utcnow

MODEL = "sentiment-classifier"


@pytest.fixture()
def store() -> Any:
    s = load_settings()
    st = InferenceStore(s.store_url)
    yield st
    st.close()


def _serve(store: InferenceStore, n: int, offset: int = 0) -> list[PredictionRecord]:
    """``n`` tweets logged as if the server had predicted them (no labels yet)."""
    tweets = load_corpus("tweets").train
    recs = [
        PredictionRecord(
            model_name=MODEL,
            model_version=1,
            text=tweets.texts[offset + i],
            prediction=i % 2,
            probability=0.8 if i % 2 else 0.3,
            confidence=0.8 if i % 2 else 0.7,
        )
        for i in range(n)
    ]
    store.add_predictions(recs)
    return recs


def test_import_ids_with_bad_rows_keeps_good_rows(store: InferenceStore, tmp_path: Path) -> None:
    recs = _serve(store, 4)
    path = tmp_path / "labels.csv"
    path.write_text(
        "id,label\n"
        f"{recs[0].id},positive\n"  # line 2 ok
        "deadbeef,1\n"  # line 3 unknown id
        f"{recs[1].id},sideways\n"  # line 4 bad label
        ",1\n"  # line 5 missing id
        f"{recs[2].id},0\n"  # line 6 ok
        f"{recs[3].id},1,extra\n"  # line 7 wrong field count
        "\n"
        f"{recs[3].id},\n"  # line 9 blank label: not labeled yet, skipped
    )
    summary = import_feedback(store, path, MODEL)
    assert summary.rows == 7
    assert summary.applied == 2 and summary.labeled == 2
    assert summary.skipped == 1
    assert [e.line for e in summary.errors] == [3, 4, 5, 7]
    messages = [str(e) for e in summary.errors]
    assert "deadbeef" in messages[0] and "sideways" in messages[1] and "expected 2 fields" in messages[3]
    assert store.get(recs[0].id).feedback_label == 1
    assert store.get(recs[2].id).feedback_label == 0
    assert store.get(recs[1].id).feedback_label is None

    with pytest.raises(BadRowsError, match=re.escape(f"4 bad row(s) in {path}; the good")) as err:
        summary.raise_for_errors()
    assert err.value.summary is summary and err.value.exit_code == DataError.exit_code == 65

    again = import_feedback(store, path, MODEL)  # nothing applied twice
    assert again.applied == 0 and again.unchanged == 2
    assert store.count() == 4


def test_import_texts_dedupes_and_relabels(store: InferenceStore, tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    lines = [
        json.dumps({"text": "the flight was late again", "label": "negative"}),  # 1
        "{not json",  # 2
        json.dumps({"text": "great service, thanks!", "label": 1}),  # 3
        json.dumps({"text": "great service, thanks!", "label": 1}),  # 4 same pair in the file
        json.dumps({"text": "no label key"}),  # 5
        json.dumps(["a", "list"]),  # 6
        json.dumps({"label": 1}),  # 7 neither id nor text
    ]
    path.write_text("\n".join(lines) + "\n")
    summary = import_feedback(store, path, MODEL)
    assert summary.added == 2 and summary.unchanged == 1
    assert [e.line for e in summary.errors] == [2, 5, 6, 7]
    assert "invalid JSON" in str(summary.errors[0]) and "label" in str(summary.errors[1])
    assert store.count(source="import") == 2

    again = import_feedback(store, path, MODEL)
    assert again.applied == 0 and again.unchanged == 3
    assert store.count(source="import") == 2  # no duplicate rows

    fix = tmp_path / "fix.csv"
    fix.write_text('text,label\n"great service, thanks!",0\n')
    fixed = import_feedback(store, fix, MODEL)
    assert fixed.relabeled == 1 and fixed.added == 0
    labels = {r.text: r.feedback_label for r in store.rows(source="import")}
    assert labels == {"the flight was late again": 0, "great service, thanks!": 0}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.txt", "id,label\n", "unsupported file type"),
        ("x.csv", "", "empty"),
        ("x.csv", "text,sentiment\nhello,1\n", "needs columns"),
        ("x.jsonl", "\n\n", "no rows"),
    ],
)
def test_import_unusable_files(store: InferenceStore, tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        import_feedback(store, path, MODEL)


def test_export_then_label_then_import_round_trip(store: InferenceStore, tmp_path: Path) -> None:
    recs = _serve(store, 6)
    store.set_feedback(recs[0].id, 1)
    out = tmp_path / "todo.csv"
    summary = export_feedback(store, out, unlabeled=True)
    assert summary.rows == 5
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "text", "prediction", "confidence", "label"]
    assert [r["id"] for r in rows] == [r.id for r in recs[1:]]  # oldest first
    assert all(r["label"] == "" for r in rows)
    assert rows[0]["text"] == "'" + recs[1].text  # a tweet to @AmericanAir: a formula to a spreadsheet
    assert csv_text(rows[0]["text"]) == recs[1].text

    for row, label in zip(rows, [0, 1], strict=False):  # a person labels two of them
        row["label"] = str(label)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = import_feedback(store, out, MODEL)
    assert result.labeled == 2 and result.skipped == 3 and not result.errors
    result.raise_for_errors()  # no bad rows: nothing raised

    window = tmp_path / "recent.jsonl"
    assert export_feedback(store, window, window=2).rows == 2
    last = [json.loads(line) for line in window.read_text().splitlines()]
    assert [r["id"] for r in last] == [recs[4].id, recs[5].id]
    assert set(last[0]) == {"id", "text", "prediction", "confidence", "label"}
    assert export_feedback(store, tmp_path / "all.csv").rows == 6


def test_cli_import_exit_codes_and_json(cli, store: InferenceStore, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    recs = _serve(store, 2)
    good = tmp_path / "good.csv"
    good.write_text(f"id,label\n{recs[0].id},1\n")
    result = cli("feedback", "import", str(good))
    assert result.exit_code == 0, result.output
    assert "1 applied" in result.stdout

    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,label\n{recs[1].id},0\nnope,1\n")
    result = cli("feedback", "import", str(bad), "--json")
    assert result.exit_code == 65
    data = json.loads(result.stdout)
    assert data["applied"] == 1 and data["errors"] == [{"line": 3, "message": "no logged prediction with id 'nope'"}]
    assert result.stderr.count("Error:") == 1  # rendered once, by the CLI's one error path
    assert f"Error: 1 bad row(s) in {bad}; the good rows were applied" in " ".join(result.stderr.split())
    assert store.get(recs[1].id).feedback_label == 0  # the good row was kept

    result = cli("feedback", "import", str(bad))  # the table: each bad row on stderr, then one error line
    assert result.exit_code == 65
    assert "2 rows: 0 applied" in result.stdout and "1 unchanged" in result.stdout and "1 bad" in result.stdout
    assert f"{bad}: line 3: no logged prediction with id 'nope'" in result.stderr
    assert result.stderr.count("Error:") == 1

    missing = cli("feedback", "import", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 65 and "no such file" in missing.stderr

    out = tmp_path / "export.jsonl"
    result = cli("feedback", "export", "--unlabeled", "--window", "10", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 0  # both are labeled now
    assert out.exists() and out.read_text() == ""


# -- texts are data: CSV cells never formulas, files owner-only, no user file replaced --------
FORMULAS = [
    '=HYPERLINK("https://evil.example","click")',
    "+1 for the crew",
    "-2 stars, lost my bag",
    "@AmericanAir thanks for nothing",
    "\tstarts with a tab",
    "\rstarts with a carriage return",
    "'quoted' from the start",
    "''two quotes",
    " leading space and trailing space ",
    "ends with a newline\n",
    "plain text, = + - @ inside is fine",
]


@given(st.sampled_from(["", "=", "+", "-", "@", "\t", "\r", "'", " ", "\n"]), st.text())
def test_csv_cell_escapes_formulas_and_gives_back_the_text(start: str, rest: str) -> None:
    text = start + rest
    cell = csv_cell(text)
    assert csv_text(cell) == text
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert cell == text or cell == "'" + text


def _without_ids(src: Path, dest: Path) -> None:
    """What a person does in a spreadsheet: keep text and label, cells as they are."""
    with src.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with dest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": "1"} for r in rows)


def test_exported_csv_holds_no_formula_and_imports_back_exactly(store: InferenceStore, tmp_path: Path) -> None:
    store.add_predictions(
        [
            PredictionRecord(MODEL, 1, t, 1, 0.9, 0.9, created_at=utcnow() + timedelta(seconds=i))
            for i, t in enumerate(FORMULAS)
        ]
    )
    out = tmp_path / "todo.csv"
    assert export_feedback(store, out).rows == len(FORMULAS)
    with out.open(newline="", encoding="utf-8") as fh:
        cells = [r["text"] for r in csv.DictReader(fh)]
    assert cells[:10] == ["'" + t for t in FORMULAS[:10]] and cells[10] == FORMULAS[10]
    assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells)

    texts_only = tmp_path / "labels.csv"
    _without_ids(out, texts_only)
    summary = import_feedback(store, texts_only, MODEL)
    assert summary.added == len(FORMULAS) and not summary.errors
    assert sorted(r.text for r in store.rows(source="import")) == sorted(FORMULAS)  # exactly the texts

    jsonl = tmp_path / "todo.jsonl"  # not a spreadsheet format: texts as they are, both ways
    export_feedback(store, jsonl, model_name=MODEL)
    assert [json.loads(line)["text"] for line in jsonl.read_text(encoding="utf-8").splitlines()][:11] == FORMULAS


def test_hand_made_csv_cells_are_trimmed_and_lose_one_leading_quote(store: InferenceStore, tmp_path: Path) -> None:
    path = tmp_path / "hand.csv"
    path.write_text('text,label\n  padded by hand  ,1\n"\'=1+1",0\n')
    import_feedback(store, path, MODEL)
    assert sorted(r.text for r in store.rows(source="import")) == ["=1+1", "padded by hand"]


def test_export_is_owner_only_and_never_replaces_a_file_unless_asked(store: InferenceStore, tmp_path: Path) -> None:
    _serve(store, 3)
    out = tmp_path / "todo.csv"
    export_feedback(store, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    mine = tmp_path / "mine.csv"
    mine.write_text("my labels\n")
    mine.chmod(0o640)
    with pytest.raises(ExportRefusedError, match="exists; pass --overwrite"):
        export_feedback(store, mine)
    assert mine.read_text() == "my labels\n"
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(ExportRefusedError, match="is a folder"):
        export_feedback(store, tmp_path / "folder.csv", overwrite=True)
    assert export_feedback(store, mine, overwrite=True).rows == 3
    assert stat.S_IMODE(mine.stat().st_mode) == 0o640 and mine.read_text().startswith("id,text")


def test_cli_export_refuses_an_existing_file_and_texts_not_kept(  # type: ignore[no-untyped-def]
    cli, store: InferenceStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(store, 2)
    out = tmp_path / "labels.csv"
    out.write_text("id,label\n")
    result = cli("feedback", "export", str(out))
    assert result.exit_code == 2 and "pass --overwrite" in " ".join(result.stderr.split())
    assert out.read_text() == "id,label\n"
    assert cli("feedback", "export", "--overwrite", str(out)).exit_code == 0
    monkeypatch.setenv("SENTOPS_STORE__STORE_TEXT", "false")
    result = cli("feedback", "export", str(tmp_path / "none.csv"))
    assert result.exit_code == 65 and "texts are not kept (store.store_text is false)" in " ".join(
        result.stderr.split()
    )
    assert not (tmp_path / "none.csv").exists()
