"""What a logged model says about itself, read as data without loading it: the classes its
version's tags name (``LABELS_TAG``), or those in its ``sentops.json`` (the ``hf_model`` folder
of the ``tracking.pyfunc`` layout), found through the MLmodel file parsed as plain YAML, as
``tracking.artifacts`` finds the graph."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from sentiment_ops.errors import ModelLoadError, SentopsError
from sentiment_ops.labels import BINARY, LabelSet
from sentiment_ops.tracking.artifacts import _inside, _mapping
from sentiment_ops.tracking.client import mlflow_errors
from sentiment_ops.tracking.pyfunc import ARTIFACT_KEY

META_FILE = "sentops.json"
# The model's classes, on the run that logs it (``log_model``) and so on its version
# (``register`` copies the run's sentops.* tags): a JSON list of names in index order, or
# names joined by commas. A version without it predicts negative / positive.
LABELS_TAG = "sentops.labels"


def tag_classes(tags: dict[str, str]) -> LabelSet:
    """The classes a version's tags name (``LABELS_TAG``); ``BINARY`` without the tag."""
    value = (tags.get(LABELS_TAG) or "").strip()
    if not value:
        return BINARY
    try:
        names = json.loads(value) if value.startswith("[") else value.split(",")
        return LabelSet(tuple(str(n) for n in names))
    except (ValueError, SentopsError):
        return BINARY


def logged_classes(model_uri: str) -> LabelSet:
    """The classes of the model logged at ``model_uri`` (a location an artifact repository
    reads): its ``sentops.json`` ``labels``; negative / positive for a model saved without
    them. Two small files are downloaded, nothing is loaded."""
    import yaml
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory(prefix="sentops-meta-") as tmp, mlflow_errors(f"read {model_uri}"):
        repo = get_artifact_repository(model_uri)
        mlmodel = yaml.safe_load(Path(repo.download_artifacts("MLmodel", tmp)).read_text())
        artifacts = _mapping(_mapping(_mapping(mlmodel).get("flavors")).get("python_function")).get("artifacts")
        hf_model = _mapping(artifacts).get(ARTIFACT_KEY)
        if not isinstance(hf_model, dict):
            raise ModelLoadError(f"{model_uri}: the MLmodel file names no {ARTIFACT_KEY} folder")
        folder = _inside(hf_model.get("path"))
        names = {item.path.rsplit("/", 1)[-1] for item in repo.list_artifacts(folder) if not item.is_dir}
        if META_FILE not in names:
            return LabelSet.from_meta({})
        meta = json.loads(Path(repo.download_artifacts(f"{folder}/{META_FILE}", tmp)).read_text())
    return LabelSet.from_meta(meta if isinstance(meta, dict) else {})
