"""What ``sentops score`` may write over: never its input, and never a file or folder it did
not write itself unless ``--overwrite`` says so.

"It wrote it" is a marker its outputs carry:

- a **file** (the local engine's Parquet output) carries it in its own Parquet key-value
  metadata (``PARQUET_KEY``): it travels with the file when it is copied or moved, and no
  sidecar can be lost or left behind; a Parquet file from anywhere else lacks it, and so does
  any file that is not Parquet;
- a **folder** (Spark's output) holds a ``MARKER`` file, and is taken as ours only while it
  holds nothing else but what Spark writes (``part-*``, ``_SUCCESS``, their ``.crc``): a file
  a person added to it since keeps the folder from being replaced without ``--overwrite``.

The output is the input when the two paths resolve (symlinks followed) to one, when one lies
inside the other (a folder input of Spark's, or an output folder holding the input), or when
they are one file under two names (a hard link: same ``st_dev`` and ``st_ino``). That is
refused even with ``--overwrite``: replacing the output would destroy what is being read."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentiment_ops.errors import ConfigError

MARKER = "_SENTOPS_SCORE"  # in a folder output; Spark and pyarrow skip names starting with "_"
PARQUET_KEY = b"sentops.score"  # in a file output's Parquet key-value metadata
# what Spark's committers leave in an output folder, besides the marker (and Hadoop's .crc)
_SPARK_NAMES = re.compile(r"^\.?(part-|_SUCCESS|_committed_|_started_|" + MARKER + ")")
_GLOB = re.compile(r"[*?\[{]")


class OutputRefusedError(ConfigError):
    """``sentops score`` will not write there: the output is the input, or something it did
    not write is in the way (``--overwrite`` to replace that). Exit 2, nothing written."""


def stamp(model_name: str, model_version: int) -> dict[str, Any]:
    """What the marker says: who wrote the output, when, with which model."""
    from sentiment_ops import __version__

    return {
        "tool": "sentops score",
        "sentops": __version__,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model_name,
        "model_version": model_version,
    }


def marker_bytes(info: dict[str, Any]) -> bytes:
    return json.dumps(info).encode()


def spark_folder_is_ours(names: list[str]) -> bool:
    """A folder's entries: the marker and nothing but what Spark writes beside it."""
    return MARKER in names and all(_SPARK_NAMES.match(n) for n in names)


def written_by_score(path: Path) -> bool:
    """True when ``path`` (file or folder, symlinks followed) carries this tool's marker."""
    if path.is_dir():
        try:
            names = os.listdir(path)
        except OSError:
            return False
        return (path / MARKER).is_file() and spark_folder_is_ours(names)
    if not path.is_file():
        return False
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError):  # not Parquet: not ours
        return False
    return PARQUET_KEY in metadata


def input_root(src: str) -> str:
    """An input path or URI without its glob (Spark reads ``data/*.parquet``): the folder
    above the first pattern."""
    found = _GLOB.search(src)
    if found is None:
        return src
    cut = src.rfind("/", 0, found.start())
    return src[:cut] if cut > 0 else "/" if cut == 0 else "."


def overlaps(src: Path, dest: Path) -> bool:
    """``dest`` is ``src``, a name of it (symlink, hard link), inside it, or holds it."""
    a, b = src.resolve(), dest.resolve()
    if a == b or a.is_relative_to(b) or b.is_relative_to(a):
        return True
    try:
        return os.path.samefile(src, dest)
    except OSError:  # one of them does not exist
        return False


def is_the_input(dest: str | Path, src: str | Path) -> OutputRefusedError:
    return OutputRefusedError(
        f"{dest}: the output is the input {src} (or inside it, or holds it); "
        "writing there would destroy what is being scored: choose another output"
    )


def in_the_way(dest: str | Path, what: str = "something") -> OutputRefusedError:
    return OutputRefusedError(
        f"{dest}: {what} that sentops score did not write is in the way; "
        "pass --overwrite to replace it, or choose another output"
    )


def check_output(src: Path | None, dest: Path, overwrite: bool) -> None:
    """OutputRefusedError unless ``dest`` may be written: it is not the input ``src`` (None:
    not checked), and it is absent, ours, or ``overwrite`` was given."""
    if src is not None and overlaps(src, dest):
        raise is_the_input(dest, src)
    if os.path.lexists(dest) and not overwrite and not written_by_score(dest):
        raise in_the_way(dest, "a folder" if dest.is_dir() else "a file")


def replace(new: Path, dest: Path) -> None:
    """Put ``new`` at ``dest``. A file over a file (or a symlink: the link is replaced, never
    what it points to) is one atomic rename; otherwise the old one is renamed aside first and
    removed once ``new`` is in place, so ``dest`` is never half-written."""
    if not os.path.lexists(dest) or not (new.is_dir() or (dest.is_dir() and not dest.is_symlink())):
        os.replace(new, dest)
        return
    aside = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.old")
    os.rename(dest, aside)
    try:
        os.rename(new, dest)
    except OSError:
        os.rename(aside, dest)
        raise
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside)
    else:
        aside.unlink()
