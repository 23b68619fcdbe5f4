"""``sentops score --spark MASTER``: the same job on Apache Spark, through MLflow's own
``mlflow.pyfunc.spark_udf`` over the self-contained logged model.

The model version is downloaded once on the driver with the registry's own URIs and handed
to ``spark_udf`` as a local folder; ``spark_udf`` ships it to the executors (``SparkFiles``)
and each Python worker loads it as plain MLflow would: the logged model carries its code
(``code_paths``) and pinned requirements, so the executors need mlflow, torch and
transformers but not ``sentiment_ops``. ``env_manager`` is ``local`` (the executors' own
Python); a cluster whose workers lack those packages can pass ``virtualenv``.

Input: Parquet, CSV (header row) or JSON Lines, read by Spark (a file, a folder of parts, or
any URI the cluster reads: ``hdfs://``, ``s3a://``, ``dbfs:/``). Output: a Parquet folder
(Spark's parts) with the columns of ``sentops score`` (``row``, ``label``, ``label_name``,
``probability`` (binary models), ``confidence``, one ``p_<class>`` per class of the model's
metadata; ``embedding`` on request). ``row`` is the row's 1-based
position in the order Spark reads the input, which is the file's order for one file. The
rows the local path calls bad (no or blank text, a control character) are counted and left
out the same way, with the same messages; the first ``MAX_ERRORS_KEPT`` are listed by row.
A local output appears only when complete (written beside it, then renamed); on a cluster
file system Spark's own committer makes the folder complete (``_SUCCESS``). The output is
never the input, and replaces only a folder of ours unless ``overwrite`` (``spark_output``). Spark retries
failed tasks itself, so there is no resume; ``--log`` to the inference store is for the local
engine.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sentiment_ops.config import Settings
from sentiment_ops.errors import ConfigError, DataError, first_line
from sentiment_ops.inference.passes import probability_columns
from sentiment_ops.labels import LabelSet
from sentiment_ops.scoring import guard, spark_output
from sentiment_ops.scoring.reader import KINDS, row_problem
from sentiment_ops.scoring.run import MAX_ERRORS_KEPT, ScoreJob, ScoreSummary, check_backend
from sentiment_ops.tracking import spark as tracking_spark
from sentiment_ops.tracking.predictors import resolve_version
from sentiment_ops.tracking.registry import Registry

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

# The Java regex of store.text_problem's rule (C0 controls but tab/LF/CR, and DEL): rows it
# matches are bad, as in the local path. Lone surrogates cannot reach Spark (its strings are
# UTF-8), so the other half of the rule has nothing to find here.
CONTROL_REGEX = "[\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F]"
# one bit more than Spark's 33 record bits: monotonically_increasing_id = partition << 33 | index
_RECORD_BITS = 33


def unsupported(*, log: bool, workers: int | None) -> None:
    """ConfigError for the local engine's options that mean nothing on Spark."""
    given = [name for name, value in (("--log", log), ("--workers", workers)) if value]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: not with --engine spark (Spark sizes its own workers; --log is for the local engine)"
        )


def spark_session(master: str | None, app_name: str) -> SparkSession:
    """A session on ``master`` (``local[2]``, ``spark://host:7077``, ``yarn``, …); with
    ``master`` None, the active one (a notebook's), else one on the master ``spark-submit``
    was given (PySpark's default, ``local[*]``, under plain Python). Under a local master
    the workers are this Python, and each executor core runs one, so their torch gets
    ``cores // workers`` threads each instead of all the cores each."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError("--spark needs pyspark: pip install 'sentiment-ops[spark]' (and a Java 17+ runtime)") from exc
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    builder = SparkSession.builder.appName(app_name).config("spark.ui.showConsoleProgress", "false")
    if master is not None:  # else spark-submit's --master, or PySpark's default local[*]
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        # the workers run this Python (its packages) unless PYSPARK_PYTHON says otherwise;
        # PySpark reads only the variable, at session start
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.executorEnv.OMP_NUM_THREADS", str(_local_threads(master)))
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    try:
        return builder.getOrCreate()
    except Exception as exc:  # Py4J / Java start-up errors: one line
        raise ConfigError(f"cannot start Spark on {master or 'the default master'!r}: {first_line(exc)}") from exc


def _local_threads(master: str) -> int:
    """Threads per task under a local master: the cores shared by its slots (``local`` 1,
    ``local[N]`` or ``local[N,retries]`` N, ``local[*]`` every core)."""
    cores = os.cpu_count() or 1
    inner = master[master.find("[") + 1 : master.find("]")].split(",", maxsplit=1)[0] if "[" in master else "1"
    slots = cores if inner == "*" else max(1, int(inner)) if inner.isdigit() else 1
    return max(1, cores // slots)


def read_input(spark: SparkSession, path: str, text_column: str) -> DataFrame:
    """The input as a one-column (``text``) DataFrame, in the order Spark reads it."""
    from pyspark.sql import functions as F

    kind = _kind(path)
    reader = spark.read
    try:
        if kind == "parquet":
            df = reader.parquet(path)
        elif kind == "csv":
            df = reader.option("header", True).option("multiLine", True).option("escape", '"').csv(path)
        else:
            df = reader.json(path)
    except Exception as exc:  # AnalysisException (no such path, bad file): one line
        raise DataError(f"{path}: Spark cannot read it: {first_line(exc)}") from exc
    if text_column not in df.columns:
        raise DataError(f"{path}: no column {text_column!r} (columns: {', '.join(df.columns) or 'none'})")
    return df.select(F.col(text_column).cast("string").alias("text"))


def _kind(path: str) -> str:
    """The local reader's suffixes (``reader.KINDS``), plus ``.json``; anything else is read
    as Parquet (a folder of parts, as Spark writes them)."""
    suffix = PurePosixPath(path.rstrip("/")).suffix.lower()
    return {**KINDS, ".json": "jsonl"}.get(suffix, "parquet")


def numbered(df: DataFrame) -> tuple[DataFrame, int]:
    """``df`` with ``row`` (1-based, in read order) and the row count, without a shuffle and
    without sending rows through Python: one pass counts each partition's rows, and a row's
    number is its partition's offset plus its index within the partition (both from
    ``monotonically_increasing_id``)."""
    from pyspark.sql import functions as F

    df = df.withColumn("_pid", F.spark_partition_id()).withColumn("_mid", F.monotonically_increasing_id())
    counts = sorted((r["_pid"], r["count"]) for r in df.groupBy("_pid").count().collect())
    offsets: list[Any] = []
    total = 0
    for pid, count in counts:
        offsets += [F.lit(pid), F.lit(total)]
        total += count
    if not counts:
        return df.withColumn("row", F.lit(0).cast("long")).drop("_pid", "_mid"), 0
    offset = F.element_at(F.create_map(*offsets), F.col("_pid"))
    index = F.col("_mid") - F.shiftleft(F.col("_pid").cast("long"), _RECORD_BITS)
    return df.withColumn("row", (offset + index + 1).cast("long")).drop("_pid", "_mid"), total


def bad_row(text: Column) -> Column:
    """True where the local path's ``row_problem`` finds a problem Spark can see."""
    from pyspark.sql import functions as F

    return text.isNull() | (F.trim(text) == "") | text.rlike(CONTROL_REGEX)


def score_on_spark(
    settings: Settings,
    job: ScoreJob,
    *,
    master: str | None = None,
    registry: Registry | None = None,
    spark: SparkSession | None = None,
) -> ScoreSummary:
    """Score ``job.input`` with a model version on Spark into the Parquet folder ``job.output``.
    ``job.backend``: ``torch`` (default: the logged model's own predict, which needs only its
    pinned requirements) or ``onnx`` (the int8 graph logged with it, through the pyfunc's
    ``model_config``: the local path's model, about three times faster on CPU; the
    executors need onnxruntime). The output is never the input, and replaces only an
    output of ``sentops score`` unless ``job.overwrite``. ``job.log`` and ``job.workers``
    are the local engine's: ConfigError here.

    Raises ConfigError (no pyspark, Spark does not start; guard.OutputRefusedError: the
    output is the input, or something else is in its way), DataError (unreadable input, no
    such column), NotFoundError, ModelLoadError; bad rows do not raise (see
    ``ScoreSummary.raise_for_errors``)."""
    unsupported(log=job.log, workers=job.workers)
    src, dest = str(job.input), str(job.output)
    check_backend(job.backend)
    spark_output.check_before_spark(src, dest, job.overwrite)
    serve = settings.serve
    backend = job.backend or "torch"
    plan = _Job(job.text_column, job.embedding, backend, serve.batch_max_tokens, serve.max_length, job.overwrite)
    registry = registry or Registry(settings)
    info = resolve_version(registry, job.version, serve.alias)
    who = None if job.version is not None else serve.alias
    own = spark is None and (master is not None or _active() is None)  # a session made here is stopped here
    session = spark or spark_session(master, f"sentops score {info.name} v{info.version}")
    try:
        return _score(session, registry, info.version, src, dest, plan, who)
    finally:
        if own:
            session.stop()


def _active() -> SparkSession | None:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()


@dataclass
class _Job:
    text_column: str
    embedding: bool
    backend: str
    batch_max_tokens: int
    max_length: int | None
    overwrite: bool = False  # replace an output sentops score did not write

    def model_config(self, session: SparkSession) -> dict[str, Any]:
        """The pyfunc's ``model_config``: the backend, and for onnx one ORT thread per core a
        task owns (a local master's cores shared by its slots; ``spark.task.cpus`` on a cluster)."""
        config: dict[str, Any] = {"backend": self.backend}
        if self.max_length is not None:
            config["max_length"] = self.max_length
        if self.backend == "onnx":
            master = session.sparkContext.master or ""
            if master.startswith("local"):
                threads = _local_threads(master)
            else:
                threads = int(session.conf.get("spark.task.cpus", "1") or 1)
            config.update(threads=threads, batch_max_tokens=self.batch_max_tokens)
        return config


def _score(
    session: SparkSession, registry: Registry, version: int, src: str, dest: str, job: _Job, who: str | None
) -> ScoreSummary:
    workers = session.sparkContext.defaultParallelism
    summary = ScoreSummary(src, dest, registry.model_name, version, who, job.backend, workers, engine="spark")
    text_column, embedding = job.text_column, job.embedding
    start = time.perf_counter()
    spark_output.check_on_spark(session, src, dest, job.overwrite)
    with tempfile.TemporaryDirectory(prefix="sentops-spark-") as tmp:
        model_dir = tracking_spark.download_version(registry, version, Path(tmp))
        df, summary.rows = numbered(read_input(session, src, text_column))
        df = df.withColumn("_bad", bad_row(df["text"])).cache()
        try:
            bad = df.filter("_bad").select("row", "text").orderBy("row").limit(MAX_ERRORS_KEPT).collect()
            summary.bad = df.filter("_bad").count()
            summary.errors = [{"line": r["row"], "message": row_problem(r["text"]) or "bad row"} for r in bad]
            if job.backend == "onnx":
                _check_configurable(model_dir, version)
            names = output_columns(tracking_spark.logged_classes(model_dir))
            udf = _udf(session, model_dir, embedding, job.model_config(session), result_type(names))
            good = df.filter(~df["_bad"])
            if good.rdd.getNumPartitions() < summary.workers:  # one small file is one partition: spread it
                good = good.repartition(summary.workers)
            scored = good.withColumn("p", udf("text"))
            columns = ["row", *(f"p.{name}" for name in names)]
            stamp = guard.stamp(registry.model_name, version)
            with spark_output.write_to(session, src, dest, job.overwrite, stamp) as write_to:
                scored.select(*columns, *(["p.embedding"] if embedding else [])).write.mode("overwrite").parquet(
                    write_to
                )
        finally:
            df.unpersist()
    summary.scored = summary.rows - summary.bad
    summary.seconds = time.perf_counter() - start
    summary.texts_per_s = summary.scored / summary.seconds if summary.seconds > 0 else 0.0
    return summary


def _check_configurable(model_dir: str, version: int) -> None:
    """ConfigError unless the version was logged with a ``model_config`` holding ``backend``:
    MLflow silently ignores load-time keys a model was not logged with, and the job would
    run torch while saying onnx."""
    import yaml

    mlmodel = yaml.safe_load((Path(model_dir) / "MLmodel").read_text())
    logged = (mlmodel.get("flavors", {}).get("python_function", {}) or {}).get("config") or {}
    if "backend" not in logged:
        raise ConfigError(
            f"--backend onnx: version {version} was logged without a model_config (before sentops ran the "
            "int8 graph through the pyfunc); use --backend torch, or retrain/register a new version"
        )


def output_columns(classes: LabelSet) -> list[str]:
    """The pyfunc's columns that the output keeps, in ``sentops score``'s order (its
    ``output_schema``): ``probability`` for a binary model only, one per class after."""
    head = ["label", "label_name", *(["probability"] if classes.is_binary else []), "confidence"]
    return head + probability_columns(classes)


def result_type(columns: list[str]) -> str:
    """The UDF's Spark type of the pyfunc's ``columns`` (the label strings and longs, the rest doubles)."""
    kinds = {"label": "long", "label_name": "string"}
    return ", ".join(f"{name} {kinds.get(name, 'double')}" for name in columns)


def _udf(spark: SparkSession, model_dir: str, embedding: bool, model_config: dict[str, Any], types: str) -> Any:
    types += ", embedding array<double>" if embedding else ""
    params = {"return_embedding": True} if embedding else None
    return tracking_spark.spark_udf(spark, model_dir, types, params, model_config)
