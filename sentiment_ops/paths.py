"""Folders sentops writes to: the home (embedded MLflow, SQLite store, ONNX cache) and the
folder of a SQLite file. A folder that cannot be created or written fails here, before any
work, as one line that names the folder, the user the process runs as, and the fix; not as
SQLite's "unable to open database file" deep inside MLflow or uvicorn's start-up."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sentiment_ops.errors import StoreError


def _who() -> str:
    uid = os.getuid() if hasattr(os, "getuid") else None
    return f"uid {uid}" if uid is not None else "this user"


ELSEWHERE = "or point SENTOPS_HOME (--home) at a writable folder"


def fix_hint(folder: Path) -> str:
    """What to do about a folder this process cannot write."""
    who = _who()
    uid = who.removeprefix("uid ")
    target = folder
    while not target.exists() and target.parent != target:  # the folder it could not create in
        target = target.parent
    chown = f" (`chown -R {uid} {target}`)" if uid.isdigit() else ""
    return f"give {who} write access to it{chown}, {ELSEWHERE}"


def writable_dir(folder: Path, what: str = "sentops home") -> Path:
    """Create ``folder`` (and parents) and check that this process can write in it.

    Raises ``StoreError`` (exit 70) naming the folder and the fix. The check writes and
    removes a temporary file: permission bits alone do not tell (root, read-only mounts,
    ACLs), and a file where the folder should be fails the same way."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".sentops-write-check-"):
            pass
    except (NotADirectoryError, FileExistsError) as exc:
        raise StoreError(
            f"{what} {folder} cannot be created ({exc.strerror}: a file is in the way): remove that file, {ELSEWHERE}"
        ) from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StoreError(f"{what} {folder} is not writable ({reason}): {fix_hint(folder)}") from exc
    return folder


def sqlite_file(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL (None: in memory, a URI, or another database)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    try:
        database = make_url(url).database
    except Exception:  # noqa: BLE001 - a bad URL is reported by whoever opens it
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def sqlite_hint(path: Path) -> str:
    """What to do about a SQLite file that cannot be opened in a writable folder."""
    if path.is_dir():
        return f"a folder is in the way: remove it, {ELSEWHERE}"
    return fix_hint(path)
