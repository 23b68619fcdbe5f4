"""The input of ``sentops score``, read in bounded chunks: CSV, JSONL or Parquet → for each
data row its number (1-based, header not counted), the line it starts on and its text.

Memory stays bounded whatever the file's size: rows are parsed as a stream and handed out
``chunk_rows`` at a time. A row that cannot be scored (no or empty text, undecodable
bytes, a control character: ``store.text_problem``, a malformed record) becomes a
``RowError`` with its line (Parquet: its row number) in the chunk; the file goes on. Bytes
that are not UTF-8 are read with ``surrogateescape``, so each bad byte is reported where it
is instead of failing the file."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentiment_ops.errors import DataError
from sentiment_ops.feedback import RowError
from sentiment_ops.store import text_problem

KINDS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a non-UTF-8 byte


@dataclass
class Chunk:
    """Up to ``chunk_rows`` consecutive data rows: the good ones and the bad ones."""

    rows: list[int] = field(default_factory=list)  # data row numbers of ``texts``
    texts: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    last_row: int = 0  # the last data row read (good or bad): where a resumed run goes on
    position: int = 0  # bytes read (CSV, JSONL) or rows read (Parquet): progress


def input_kind(path: Path) -> str:
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix or '(none)'}; use .csv, .jsonl or .parquet")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return kind


def input_size(path: Path, kind: str) -> int:
    """The end of ``Chunk.position``: bytes, or Parquet rows (from the footer)."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    return path.stat().st_size


def row_problem(text: Any) -> str | None:
    """Why a value cannot be scored, or None."""
    if text is None:
        return "no text"
    if not isinstance(text, str):
        return f"text is a {type(text).__name__}, not a string"
    if not text.strip():
        return "empty text"
    found = _ESCAPED_BYTE.search(text)
    if found is not None:
        byte = ord(found.group()) - 0xDC00
        return f"undecodable byte 0x{byte:02X} at position {found.start()} (the file is not UTF-8 here)"
    return text_problem(text)


class _CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read through it (progress of a text stream)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = int(self.raw.readinto(buffer))
        self.count += n
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def read_chunks(path: Path, text_column: str = "text", chunk_rows: int = 16_384, skip_rows: int = 0) -> Iterator[Chunk]:
    """``path`` as chunks of ``chunk_rows`` data rows, from data row ``skip_rows + 1`` on
    (the rows before are parsed and dropped: a resumed run)."""
    kind = input_kind(path)
    source = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}[kind]
    chunk = Chunk()
    for row, line, value, position in source(path, text_column):
        chunk.last_row, chunk.position = row, position
        if row <= skip_rows:
            continue
        problem = value if isinstance(value, RowError) else row_problem(value)
        if isinstance(problem, RowError):
            chunk.errors.append(problem)
        elif problem is not None:
            chunk.errors.append(RowError(line, problem))
        else:
            chunk.rows.append(row)
            chunk.texts.append(value)
        if len(chunk.rows) + len(chunk.errors) >= chunk_rows:
            yield chunk
            chunk = Chunk(last_row=row, position=position)
    if chunk.rows or chunk.errors:
        yield chunk


# Each source yields (data row, line, text or RowError, position) for every data row.
_Row = tuple[int, int, Any, int]


def _open_text(path: Path) -> tuple[_CountingReader, io.TextIOWrapper]:
    counter = _CountingReader(path.open("rb", buffering=0))
    text = io.TextIOWrapper(io.BufferedReader(counter), encoding="utf-8-sig", errors="surrogateescape", newline="")
    return counter, text


def _csv_rows(path: Path, text_column: str) -> Iterator[_Row]:
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**31 - 1)))  # long reviews
    counter, fh = _open_text(path)
    with fh:
        reader = csv.reader(fh)
        try:
            header = [c.strip() for c in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: the file is empty") from None
        if text_column not in header:
            raise DataError(
                f"{path}: no column {text_column!r} (found: {', '.join(header) or 'none'}); see --text-column"
            )
        col, row, end = header.index(text_column), 0, reader.line_num
        while True:
            start = end + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                row, end = row + 1, reader.line_num
                yield row, start, RowError(start, f"malformed CSV ({exc})"), counter.count
                continue
            end = reader.line_num
            if not record:
                continue  # a blank line is no row (an empty quoted field is: a bad one)
            row += 1
            if len(record) != len(header):
                error = RowError(start, f"expected {len(header)} fields, found {len(record)} (quote texts with commas)")
                yield row, start, error, counter.count
                continue
            yield row, start, record[col], counter.count


def _jsonl_rows(path: Path, text_column: str) -> Iterator[_Row]:
    counter, fh = _open_text(path)
    with fh:
        row = 0
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield row, line_no, RowError(line_no, f"invalid JSON ({exc.msg})"), counter.count
                continue
            if not isinstance(obj, dict):
                yield row, line_no, RowError(line_no, "expected a JSON object"), counter.count
                continue
            if text_column not in obj:
                yield row, line_no, RowError(line_no, f"no field {text_column!r}"), counter.count
                continue
            yield row, line_no, obj[text_column], counter.count


def _parquet_rows(path: Path, text_column: str) -> Iterator[_Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    names = file.schema_arrow.names
    if text_column not in names:
        raise DataError(f"{path}: no column {text_column!r} (found: {', '.join(names) or 'none'}); see --text-column")
    if not pa.types.is_string(file.schema_arrow.field(text_column).type) and not pa.types.is_large_string(
        file.schema_arrow.field(text_column).type
    ):
        raise DataError(f"{path}: column {text_column!r} is {file.schema_arrow.field(text_column).type}, not text")
    row = 0
    for batch in file.iter_batches(batch_size=8192, columns=[text_column]):
        for value in batch.column(0).to_pylist():
            row += 1
            yield row, row, value, row
