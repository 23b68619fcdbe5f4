"""Batch inference (``sentops score``): a CSV, JSONL or Parquet file of
texts → a Parquet file of predictions, in bounded memory, on every core, resumable.

    reader.py    the input in bounded chunks; bad rows with their lines
    engine.py    where forward passes run: worker processes (ONNX) or in process; the seam
                 a distributed engine plugs into
    partial.py   the output in progress: parts, state, resume, the final rename
    guard.py     what the output may replace: never the input; only its own outputs (their
                 marker) unless --overwrite
    run.py       score_file: the above strung together, --log to the inference store
    spark.py     score_on_spark: the job on Apache Spark (``--spark MASTER``) through
                 ``mlflow.pyfunc.spark_udf``; imported on demand (pyspark is an extra)
    spark_output.py  where the Spark job writes, under guard's rules (local path or URI)"""

from sentiment_ops.scoring.engine import Engine, InProcessEngine, OnnxFiles, ProcessEngine
from sentiment_ops.scoring.guard import OutputRefusedError
from sentiment_ops.scoring.run import (
    BadScoreRowsError,
    ScoreJob,
    ScoreProgress,
    ScoreSummary,
    open_engine,
    output_schema,
    score_file,
)

__all__ = [
    "BadScoreRowsError",
    "Engine",
    "InProcessEngine",
    "OnnxFiles",
    "OutputRefusedError",
    "ProcessEngine",
    "ScoreJob",
    "ScoreProgress",
    "ScoreSummary",
    "open_engine",
    "output_schema",
    "score_file",
]
