"""A run of ``sentops score`` in progress, on disk: ``<output>.partial/`` holds one Parquet
part per finished chunk and ``state.json`` (the input's fingerprint, the options, the last
data row done, the counts). The output appears only when complete: the parts are streamed
into one file next to them, which is then renamed over ``<output>`` and the folder removed.

A rerun with the same input and options resumes after the last finished chunk; anything
else (another file, model version, text column…) starts over. Each part and each state is
written to a temporary name and renamed, so a run killed at any moment leaves a state that
agrees with its parts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

STATE_FILE = "state.json"
FINGERPRINT_BYTES = 1 << 20  # hashed from the start and the end of the input


def fingerprint(path: Path) -> dict[str, Any]:
    """Size, modification time and a hash of the first and last MiB: a changed input
    does not resume (hashing ten million rows on every run would cost minutes)."""
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        digest.update(fh.read(FINGERPRINT_BYTES))
        if stat.st_size > FINGERPRINT_BYTES:
            fh.seek(max(FINGERPRINT_BYTES, stat.st_size - FINGERPRINT_BYTES))
            digest.update(fh.read(FINGERPRINT_BYTES))
    return {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": digest.hexdigest(),
    }


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class PartialRun:
    """``<output>.partial/``: the parts written so far and the state that names them."""

    def __init__(self, output: Path, key: dict[str, Any]) -> None:
        self.output = output
        self.dir = output.with_name(output.name + ".partial")
        self.key = key
        self.state: dict[str, Any] = {"key": key, "parts": 0, "last_row": 0, "counts": {}, "errors": []}
        self.resumed = False

    def open(self) -> None:
        """Resume the state of a run with the same key, or start a new one."""
        state_file = self.dir / STATE_FILE
        if state_file.exists():
            try:
                old = json.loads(state_file.read_text())
            except (OSError, ValueError):
                old = None
            if isinstance(old, dict) and old.get("key") == self.key:
                self.state = old
                self.resumed = old["parts"] > 0
                return
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self._save()

    @property
    def last_row(self) -> int:
        return int(self.state["last_row"])

    def _part(self, index: int) -> Path:
        return self.dir / f"part-{index:06d}.parquet"

    def add(self, table: pa.Table, last_row: int, counts: dict[str, int], errors: list[dict[str, Any]]) -> None:
        """One finished chunk: its part, then the state that counts it."""
        index = int(self.state["parts"])
        tmp = self.dir / f".part-{index:06d}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self._part(index))
        self.state.update(parts=index + 1, last_row=last_row, counts=counts, errors=errors)
        self._save()

    def _save(self) -> None:
        _write_atomic(self.dir / STATE_FILE, json.dumps(self.state).encode())

    def finish(self, schema: pa.Schema) -> None:
        """Stream the parts into one file and rename it to the output; remove the folder."""
        result = self.dir / "result.parquet.tmp"
        with pq.ParquetWriter(result, schema) as writer:
            for index in range(int(self.state["parts"])):
                writer.write_table(pq.read_table(self._part(index), schema=schema))
        os.replace(result, self.output)
        shutil.rmtree(self.dir, ignore_errors=True)
