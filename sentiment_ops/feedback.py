"""Feedback labels in and out of the inference store, as files people can work with.

``import_feedback`` reads CSV or JSONL rows of either

* ``id,label``: the true label of a logged prediction (``id`` as returned by the server), or
* ``text,label``: a new labeled text that was never served (stored with ``source='import'``).

Labels are class names of the serving model (any case) or indices ``0..k-1`` (``LabelSet.index``;
a binary model also takes ``neg``/``pos``). A blank label (an exported row nobody labeled yet) is
skipped. Bad rows (unknown id, a label not of the model, naming its classes, missing fields, bad
JSON, wrong field count) are reported with their line numbers; the good rows are kept
(``ImportSummary.raise_for_errors`` then raises ``BadRowsError``, a DataError carrying the
summary). A text the store cannot hold (``store.text_problem``, the rule of the API) stops the
import with one DataError naming the file and line, before any write. Nothing is applied twice:
a label already recorded is ``unchanged``, and a ``text,label`` pair imported before is a
duplicate (matched on the SHA-256 of the text; a new label replaces it).

``export_feedback`` writes ``id,text,prediction,confidence,label`` rows of served predictions
(optionally only the unlabeled ones) for people who label; ``prediction`` and ``label`` are 0/1
for a binary model and class names for a model with more classes. The file imports back as it
is. ``write_export`` writes given rows in that format (``labeling.export_selection``). An export
is owner-only (0600; a file replaced with ``overwrite`` keeps its mode), never replaces a file
unless ``overwrite`` is given (``ExportRefusedError``), and is refused with ``store.store_text``
off (``TextsNotKeptError``: no texts to label).

Texts in a CSV are data, never formulas (``csv_cell`` / ``csv_text``): a text that a
spreadsheet would read as a formula (first character ``= + - @``, tab or CR), that starts
with ``'``, or that starts or ends with white space is written with one ``'`` in front (the
OWASP rule for CSV injection); import removes that one ``'`` and keeps the rest exactly. A
text cell without it is trimmed (hand-made files). JSONL texts are written and read as they are.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sentiment_ops.errors import ConfigError, DataError
from sentiment_ops.labels import BINARY, LabelSet
from sentiment_ops.store import InferenceStore, PredictionRecord, records_from, text_hash, text_problem

EXPORT_COLUMNS = ("id", "text", "prediction", "confidence", "label")
CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
# what makes a spreadsheet read a cell as a formula (OWASP, CSV injection), and the quote
# that escapes it (escaped as well, so import can take exactly one quote off)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_QUOTE = "'"


def csv_cell(text: str) -> str:
    """A text as a CSV cell no spreadsheet runs as a formula and import gives back exactly
    (``csv_text``): one ``'`` in front when it starts with ``= + - @``, tab, CR, ``'`` or space."""
    if text and (text.startswith((*FORMULA_START, CSV_QUOTE)) or text[0].isspace() or text[-1].isspace()):
        return CSV_QUOTE + text
    return text


def csv_text(cell: str) -> str:
    """The text of a CSV cell: without its one leading ``'`` (``csv_cell``), else trimmed."""
    return cell[1:] if cell.startswith(CSV_QUOTE) else cell.strip()


class TextsNotKeptError(DataError):
    """``store.store_text`` is false: no served text is kept, so none can be exported or
    chosen to label."""

    def __init__(self) -> None:
        super().__init__(
            "texts are not kept (store.store_text is false): there are no served texts to label; "
            "label predictions by id instead (POST /feedback, or `sentops feedback import` of id,label rows)"
        )


class ExportRefusedError(ConfigError):
    """An export would replace a file (``overwrite`` not given) or a folder: nothing written."""


@dataclass
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportSummary:
    path: str
    rows: int = 0  # data rows read (blank lines not counted)
    labeled: int = 0  # logged predictions that got a new or changed label
    added: int = 0  # new labeled texts stored
    relabeled: int = 0  # imported texts whose label changed
    unchanged: int = 0  # already recorded: nothing applied
    skipped: int = 0  # label left blank (not labeled yet)
    errors: list[RowError] = field(default_factory=list)

    @property
    def applied(self) -> int:
        return self.labeled + self.added + self.relabeled

    def raise_for_errors(self) -> None:
        """Raise ``BadRowsError`` (exit 65) when some rows were bad (the good ones were applied)."""
        if self.errors:
            raise BadRowsError(self)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["applied"] = self.applied
        out["errors"] = [{"line": e.line, "message": e.message} for e in self.errors]
        return out


class BadRowsError(DataError):
    """Some rows of a feedback file were bad, the good ones applied: ``summary`` says which."""

    def __init__(self, summary: ImportSummary) -> None:
        self.summary = summary
        super().__init__(f"{len(summary.errors)} bad row(s) in {summary.path}; the good rows were applied")


@dataclass
class ExportSummary:
    path: str
    rows: int
    skipped_no_text: int  # rows logged without their text (store_text off)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Row:
    line: int
    label: int
    id: str | None = None
    text: str | None = None


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv or .jsonl")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def label_problem(raw: object, classes: LabelSet) -> str:
    """Why ``raw`` is not a label of a ``classes`` model, in one line naming its classes."""
    if classes.is_binary:  # the words binary files have always been told
        return f"label {raw!r} is not 0/1/negative/positive"
    return f"label {raw!r} is not a class of the model: {', '.join(classes.names)} (or 0..{classes.k - 1})"


def _parse_row(line: int, fields: dict[str, Any], summary: ImportSummary, classes: LabelSet) -> _Row | None:
    """One row → _Row, or None (error recorded / blank label skipped)."""
    raw_id, text = fields.get("id"), fields.get("text")
    has_id, has_text = not _blank(raw_id), isinstance(text, str) and not _blank(text)
    if not has_id and not has_text:
        summary.errors.append(RowError(line, "needs a non-empty 'id' or 'text'"))
        return None
    if "label" not in fields:
        summary.errors.append(RowError(line, "missing field 'label'"))
        return None
    raw = fields["label"]
    if _blank(raw):
        summary.skipped += 1
        return None
    label = classes.index(raw)
    if label is None:
        summary.errors.append(RowError(line, label_problem(raw, classes)))
        return None
    if has_id:
        return _Row(line, label, id=str(raw_id).strip())
    assert isinstance(text, str)
    return _Row(line, label, text=text)  # CSV cells come trimmed or unquoted (csv_text)


def _csv_rows(path: Path, summary: ImportSummary) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: the file is empty") from None
        columns = [c.strip().lower() for c in header]
        if "label" not in columns or not ({"id", "text"} & set(columns)):
            raise DataError(f"{path}: needs columns id,label or text,label (found: {', '.join(columns) or 'none'})")
        end = reader.line_num
        for record in reader:
            start, end = end + 1, reader.line_num
            if not record or all(not c.strip() for c in record):
                continue
            summary.rows += 1
            if len(record) != len(columns):
                summary.errors.append(
                    RowError(start, f"expected {len(columns)} fields, found {len(record)} (quote texts with commas)")
                )
                continue
            fields = dict(zip(columns, record, strict=True))
            if "text" in fields:
                fields["text"] = csv_text(fields["text"])
            yield start, fields


def _jsonl_rows(path: Path, summary: ImportSummary) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            summary.rows += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                summary.errors.append(RowError(lineno, f"invalid JSON ({exc.msg})"))
                continue
            if not isinstance(obj, dict):
                summary.errors.append(RowError(lineno, "expected a JSON object"))
                continue
            yield lineno, {str(k).lower(): v for k, v in obj.items()}


def read_feedback_file(
    path: str | Path, summary: ImportSummary | None = None, classes: LabelSet = BINARY
) -> tuple[list[_Row], ImportSummary]:
    """Parse a feedback file of labels of a ``classes`` model; bad rows land in
    ``summary.errors``, good ones are returned."""
    path = Path(path)
    summary = summary or ImportSummary(path=str(path))
    kind = _file_kind(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    source = _csv_rows if kind == "csv" else _jsonl_rows
    rows: list[_Row] = []
    try:
        for line, fields in source(path, summary):
            text = fields.get("text")
            problem = text_problem(text) if isinstance(text, str) else None
            if problem is not None:  # the store cannot hold it: refuse the file, say where
                raise DataError(f"{path} line {line}: {problem}")
            row = _parse_row(line, fields, summary, classes)
            if row is not None:
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: cannot be read as CSV: {exc}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    if summary.rows == 0:
        raise DataError(f"{path}: no rows")
    return rows, summary


def import_feedback(
    store: InferenceStore, path: str | Path, model_name: str, classes: LabelSet = BINARY
) -> ImportSummary:
    """Apply the labels in a CSV/JSONL file, labels of the serving model's ``classes``; see
    the module docstring for the rules."""
    rows, summary = read_feedback_file(path, classes=classes)

    by_id = [r for r in rows if r.id is not None]
    statuses = store.set_feedback_many([(r.id, r.label) for r in by_id if r.id is not None], classes.k)
    for row, status in zip(by_id, statuses, strict=True):
        if status == "missing":
            summary.errors.append(RowError(row.line, f"no logged prediction with id {row.id!r}"))
        elif status == "unchanged":
            summary.unchanged += 1
        else:
            summary.labeled += 1

    by_text = [r for r in rows if r.text is not None]
    known = store.imported_labels(text_hash(r.text) for r in by_text if r.text is not None)
    pending: dict[str, PredictionRecord] = {}
    relabel: dict[str, int] = {}  # id of an imported row → its new label
    for row in by_text:
        assert row.text is not None
        h = text_hash(row.text)
        if h in pending:  # the same text earlier in this file
            rec = pending[h]
            if rec.feedback_label == row.label:
                summary.unchanged += 1
            else:
                rec.feedback_label = row.label  # still one new row; the last label wins
        elif h in known:
            row_id, old = known[h]
            if old == row.label:
                summary.unchanged += 1
            else:
                if row_id not in relabel:
                    summary.relabeled += 1
                relabel[row_id] = row.label
                known[h] = (row_id, row.label)
        else:
            pending[h] = records_from([row.text], [row.label], model_name)[0]
    summary.added = len(pending)
    store.add_predictions(list(pending.values()))
    store.set_feedback_many(list(relabel.items()), classes.k)
    summary.errors.sort(key=lambda e: e.line)
    return summary


def export_feedback(
    store: InferenceStore,
    path: str | Path,
    *,
    unlabeled: bool = False,
    window: int | None = None,
    since: datetime | None = None,
    model_name: str | None = None,
    overwrite: bool = False,
    classes: LabelSet = BINARY,
) -> ExportSummary:
    """Write served predictions (the ``window`` most recent; only unlabeled ones with
    ``unlabeled``) as CSV or JSONL, oldest first. The file appears whole or not at all; an
    existing one is replaced only with ``overwrite``."""
    path = Path(path)
    check_export_path(path, overwrite)  # refused before the store is read
    if not store.store_text:
        raise TextsNotKeptError()
    if window is not None and window < 1:
        raise DataError(f"window must be at least 1, got {window}")
    records = store.rows(
        since=since, limit=window, labeled=False if unlabeled else None, source="api", model_name=model_name
    )
    return write_export(path, records, overwrite=overwrite, classes=classes)


def check_export_path(path: Path, overwrite: bool) -> None:
    """DataError for an unknown suffix; ExportRefusedError for a folder, or for a file that
    is there already (a person may have labeled it) unless ``overwrite``."""
    _file_kind(path)
    if path.is_dir():
        raise ExportRefusedError(f"{path}: is a folder; choose a file name")
    if os.path.lexists(path) and not overwrite:
        raise ExportRefusedError(f"{path}: the file exists; pass --overwrite to replace it, or choose another name")


def _rows_out(records: Sequence[PredictionRecord], kind: str, classes: LabelSet) -> list[dict[str, Any]]:
    """The export rows of the records that kept their text; CSV texts escaped (``csv_cell``);
    classes as indices for a binary model, else as names."""
    named = not classes.is_binary
    cls = lambda i: classes.name(i) if named and i is not None and 0 <= i < classes.k else i  # noqa: E731
    return [
        {
            "id": r.id,
            "text": csv_cell(r.text) if kind == "csv" else r.text,
            "prediction": cls(r.prediction),
            "confidence": None if r.confidence is None else round(float(r.confidence), 4),
            "label": cls(r.feedback_label),
        }
        for r in records
        if r.text
    ]


def write_export(
    path: str | Path, records: Sequence[PredictionRecord], overwrite: bool = False, classes: LabelSet = BINARY
) -> ExportSummary:
    """Write ``records`` (in the order given; rows without their text left out) as the
    ``id,text,prediction,confidence,label`` CSV or JSONL people label (of a ``classes``
    model: names for more than two classes). The file appears whole
    or not at all, owner-only (0600), or with the mode of the file it replaces (``overwrite``)."""
    path = Path(path)
    check_export_path(path, overwrite)
    kind = _file_kind(path)
    out_rows = _rows_out(records, kind, classes)
    keep_mode = path.stat().st_mode if path.is_file() and not path.is_symlink() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            if kind == "csv":
                writer = csv.DictWriter(fh, fieldnames=EXPORT_COLUMNS)
                writer.writeheader()
                writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in out_rows)
            else:
                for row in out_rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        if keep_mode is not None:  # the file replaced keeps the mode its owner gave it
            os.chmod(tmp, stat.S_IMODE(keep_mode))
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"{path}: cannot be written: {exc.strerror or exc}") from exc
    return ExportSummary(path=str(path), rows=len(out_rows), skipped_no_text=len(records) - len(out_rows))
