"""Where ``sentops score --spark`` writes, under the rules of ``guard``: never over its input,
never over a folder it did not write unless ``--overwrite``; its folders carry ``guard.MARKER``.

A plain path is this machine's: checked before Spark starts, written beside the output and
renamed over it when complete (``guard.replace``). A URI (``hdfs://``, ``s3a://``, ``dbfs:/``,
``file:``) is seen through Spark's own Hadoop ``FileSystem``, as Spark's write sees it, and
written in place by Spark's committer: over an existing folder (``mode("overwrite")``, which
deletes it first) only when that folder is ours or ``--overwrite`` was given."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sentiment_ops.scoring import guard

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def local_path(uri: str) -> Path | None:
    """This machine's path of a plain path or ``file:`` URI, else None."""
    parsed = urlparse(uri)
    if parsed.scheme == "":
        return Path(uri)
    return Path(parsed.path) if parsed.scheme == "file" else None


def check_before_spark(src: str, dest: str, overwrite: bool) -> None:
    """What can be refused before Spark starts: a local output (or a ``file:`` one) that is
    the local input; a plain-path output in the way (a URI is checked in ``write_to``)."""
    src_path, dest_path = local_path(guard.input_root(src)), local_path(dest)
    if src_path is not None and dest_path is not None and guard.overlaps(src_path, dest_path):
        raise guard.is_the_input(dest, src)
    if urlparse(dest).scheme == "":
        guard.check_output(None, Path(dest), overwrite)


def check_on_spark(session: SparkSession, src: str, dest: str, overwrite: bool) -> None:
    """A URI output checked through the session's file system before the job runs."""
    if urlparse(dest).scheme != "":
        _HadoopDest(session, dest).check(src, overwrite)


@contextmanager
def write_to(session: SparkSession, src: str, dest: str, overwrite: bool, stamp: dict[str, Any]) -> Iterator[str]:
    """Where Spark writes ``dest`` (with ``mode("overwrite")``), stamped with the marker when
    the write succeeded; refused (OutputRefusedError) before anything is written."""
    if urlparse(dest).scheme != "":
        target = _HadoopDest(session, dest)
        target.check(src, overwrite)
        yield dest
        target.write_marker(guard.marker_bytes(stamp))
        return
    final = Path(dest)
    partial = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield str(partial)
        (partial / guard.MARKER).write_bytes(guard.marker_bytes(stamp))
        guard.check_output(None, final, overwrite)  # again: something may have appeared there since
        guard.replace(partial, final)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


class _HadoopDest:
    """An output URI through the session's Hadoop ``FileSystem`` (py4j). A session without
    a JVM gateway (Spark Connect) cannot look: only ``--overwrite`` writes there, unmarked."""

    def __init__(self, session: SparkSession, uri: str) -> None:
        self._jvm: Any = session._jvm
        self._conf: Any = session._jsc.hadoopConfiguration() if self._jvm is not None else None
        self.uri = uri

    def _path(self, uri: str, child: str | None = None) -> Any:
        jvm_path = self._jvm.org.apache.hadoop.fs.Path
        return jvm_path(uri) if child is None else jvm_path(uri, child)

    def _qualified(self, uri: str) -> str:
        path = self._path(uri)
        return str(path.getFileSystem(self._conf).makeQualified(path).toString()).rstrip("/")

    def check(self, src: str, overwrite: bool) -> None:
        if self._jvm is None:
            if overwrite:
                return
            raise guard.OutputRefusedError(
                f"{self.uri}: this Spark session cannot look at the output's file system (no JVM "
                "gateway); pass --overwrite to write there unchecked, or write to a local path"
            )
        dest, source = self._qualified(self.uri), self._qualified(guard.input_root(src))
        if dest == source or dest.startswith(source + "/") or source.startswith(dest + "/"):
            raise guard.is_the_input(self.uri, src)
        path = self._path(self.uri)
        fs = path.getFileSystem(self._conf)
        if overwrite or not fs.exists(path):
            return
        if fs.getFileStatus(path).isDirectory():
            names = [str(status.getPath().getName()) for status in fs.listStatus(path)]
            if guard.spark_folder_is_ours(names):
                return
        raise guard.in_the_way(self.uri)

    def write_marker(self, data: bytes) -> None:
        if self._jvm is None:
            return
        marker = self._path(self.uri, guard.MARKER)
        stream = marker.getFileSystem(self._conf).create(marker, True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()
