"""A logged model read as data, never loaded: the int8 graph and the tokenizer files of a
version (the ``tracking.pyfunc`` layout), found through the MLmodel file parsed as plain
YAML and fetched from its artifact repository. None of the version's code or pickles run,
and neither torch nor transformers is needed: what the server's ``onnx`` backend and batch
scoring run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sentiment_ops.errors import ModelLoadError
from sentiment_ops.inference.onnx import ONNX_FILE, OnnxPredictor
from sentiment_ops.tracking.client import mlflow_errors
from sentiment_ops.tracking.pyfunc import ARTIFACT_KEY, ONNX_ARTIFACT_KEY, TOKENIZER_FILES


def download_logged(model_uri: str, dest: Path) -> tuple[Path, Path] | None:
    """The int8 graph of a model version logged with it (``onnx_int8``), downloaded to
    ``dest`` with what ``TextEncoder`` reads (``TOKENIZER_FILES``): ``(model folder, graph
    file)``. None when the version was logged without a graph. Only data is read: the
    MLmodel file as plain YAML, never the version's code or pickles. Batch scoring
    downloads once and opens one session per worker process."""
    import yaml
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    Path(dest).mkdir(parents=True, exist_ok=True)
    with mlflow_errors(f"download {model_uri}"):
        repo = get_artifact_repository(model_uri)
        mlmodel = yaml.safe_load(Path(repo.download_artifacts("MLmodel", str(dest))).read_text())
        artifacts = _mapping(_mapping(_mapping(mlmodel).get("flavors")).get("python_function")).get("artifacts")
        graph, hf_model = _mapping(artifacts).get(ONNX_ARTIFACT_KEY), _mapping(artifacts).get(ARTIFACT_KEY)
        if not isinstance(graph, dict) or not isinstance(hf_model, dict):
            return None
        graph_path, model_path = _inside(graph.get("path")), _inside(hf_model.get("path"))
        graph_dir = Path(repo.download_artifacts(graph_path, str(dest)))
        names = {item.path.rsplit("/", 1)[-1] for item in repo.list_artifacts(model_path) if not item.is_dir}
        for name in TOKENIZER_FILES:
            if name in names:
                repo.download_artifacts(f"{model_path}/{name}", str(dest))
    return Path(dest) / model_path, graph_dir / ONNX_FILE


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _inside(path: Any) -> str:
    """An artifact path of the MLmodel file, which must stay inside the model's folder."""
    parts = str(path or "").replace("\\", "/").split("/")
    if not path or not isinstance(path, str) or path.startswith("/") or ".." in parts or ":" in path:
        raise ModelLoadError(f"the model's MLmodel file names an artifact outside the model: {path!r}")
    return path


def logged_predictor(
    model_uri: str, threads: int | None = None, max_length: int | None = None, solo_threads: int | None = None
) -> OnnxPredictor | None:
    """The predictor of a model version logged with its int8 graph (``onnx_int8``), made
    without torch: the graph, the tokenizer files and ``sentops.json`` are downloaded
    (``download_logged``) and loaded into memory. None when the version was logged without a graph."""
    from sentiment_ops.inference.text import TextEncoder

    with tempfile.TemporaryDirectory(prefix="sentops-logged-") as tmp:
        found = download_logged(model_uri, Path(tmp))
        if found is None:
            return None
        model_dir, graph = found
        return OnnxPredictor(TextEncoder(model_dir, max_length=max_length), graph, threads, solo_threads)
