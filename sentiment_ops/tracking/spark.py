"""MLflow's side of ``sentops score --spark``: the version downloaded on the driver with the
registry's own URIs, and ``mlflow.pyfunc.spark_udf`` over that local folder (the job
itself: ``scoring.spark``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiment_ops.errors import ModelLoadError, first_line
from sentiment_ops.labels import LabelSet
from sentiment_ops.tracking.registry import Registry

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def download_version(registry: Registry, version: int, dest: Path) -> str:
    """The artifacts of ``version`` downloaded into ``dest``: the local model folder."""
    from mlflow.artifacts import download_artifacts

    try:
        return download_artifacts(
            artifact_uri=registry.download_uri(version), dst_path=str(dest), tracking_uri=registry.tracking_uri
        )
    except Exception as exc:  # any artifact store error: one line
        raise ModelLoadError(f"cannot download {registry.model_uri(version)}: {first_line(exc)}") from exc


def logged_classes(model_dir: str) -> LabelSet:
    """The classes in the MLflow model metadata of the model in ``model_dir`` (``labels``;
    a model logged without them predicts negative / positive). The MLmodel file is read as
    plain YAML."""
    import yaml

    try:
        mlmodel = yaml.safe_load((Path(model_dir) / "MLmodel").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"cannot read the MLmodel file in {model_dir}: {first_line(exc)}") from exc
    metadata = (mlmodel or {}).get("metadata") if isinstance(mlmodel, dict) else None
    return LabelSet.from_meta(metadata if isinstance(metadata, dict) else {})


def spark_udf(
    spark: SparkSession,
    model_dir: str,
    result_type: str,
    params: dict[str, Any] | None,
    model_config: dict[str, Any],
) -> Any:
    """``mlflow.pyfunc.spark_udf`` of the model in ``model_dir``, run by the executors' own
    Python (``env_manager="local"``)."""
    import mlflow.pyfunc

    try:
        return mlflow.pyfunc.spark_udf(
            spark,
            model_dir,
            result_type=result_type,
            env_manager="local",
            params=params,
            model_config=model_config,
        )
    except Exception as exc:  # MLflow cannot read the model: one line
        raise ModelLoadError(f"cannot make a Spark UDF of the model: {first_line(exc)}") from exc
