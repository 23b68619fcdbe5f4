"""A run of ``sentops score`` in progress, on disk: ``<output>.partial/`` holds one Parquet
part per finished chunk and ``state.json`` (the input's fingerprint, the options, the last
data row done, the counts). The output appears only when complete: the parts are streamed
into one file next to them, stamped with the marker of ``guard`` (Parquet metadata), which
then replaces ``<output>`` (``guard.replace``) and the folder is removed.

A rerun with the same input and options resumes after the last finished chunk; anything
else (another file, model version, text column…) starts over. Each part and each state is
written to a temporary name and renamed, so a run killed at any moment leaves a state that
agrees with its parts. A folder at ``<output>.partial`` without a state of ours is someone
else's: it is refused, never emptied."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sentiment_ops.scoring import guard

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
        old = self._old_state()
        if old is not None and old.get("key") == self.key:
            self.state = old
            self.resumed = old["parts"] > 0
            return
        if os.path.lexists(self.dir) and old is None and (not self.dir.is_dir() or any(self.dir.iterdir())):
            raise guard.OutputRefusedError(
                f"{self.dir}: in the way of the run's parts and not one of ours; move it, or choose another output"
            )
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self._save()

    def _old_state(self) -> dict[str, Any] | None:
        """The state a run of ours left in the folder, or None."""
        try:
            old = json.loads((self.dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return old if isinstance(old, dict) and "key" in old and "parts" in old else None

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

    def finish(self, schema: pa.Schema, stamp: dict[str, Any], overwrite: bool = False) -> None:
        """Stream the parts into one file stamped with ``stamp`` (the marker) and put it at
        the output; remove the folder. What appeared at the output since the run began is
        checked again: refused (the parts kept, a rerun with ``overwrite`` resumes) unless
        ours or ``overwrite``."""
        result = self.dir / "result.parquet.tmp"
        stamped = schema.with_metadata({**(schema.metadata or {}), guard.PARQUET_KEY: guard.marker_bytes(stamp)})
        with pq.ParquetWriter(result, stamped) as writer:
            for index in range(int(self.state["parts"])):
                writer.write_table(pq.read_table(self._part(index), schema=schema))
        try:
            guard.check_output(None, self.output, overwrite)
        except guard.OutputRefusedError:
            result.unlink()
            raise
        guard.replace(result, self.output)
        shutil.rmtree(self.dir, ignore_errors=True)
