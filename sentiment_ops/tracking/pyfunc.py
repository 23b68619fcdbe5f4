"""The model as MLflow logs it: a custom ``mlflow.pyfunc.PythonModel``.

Weights and tokenizer travel as the ``hf_model`` artifact (a ``save_pretrained`` folder
plus ``sentops.json`` with the truncation settings and the text normaliser the model owns,
which ``predict`` applies to the raw input; the normaliser's spec is also in the MLflow
model metadata, ``metadata.sentops.text_normalizer``). Input: a ``text`` column (or a list
of strings). Output (``prediction_frame``): ``label`` (class index), ``label_name``,
``probability`` (of positive; binary models only), ``confidence``, and ``p_<class>``, one
probability column per class; the classes are in the MLflow model metadata
(``metadata.labels``, names in index order) and the signature lists the model's columns.
With ``params={"return_embedding": True}`` also ``embedding``, the pooled vector that drift
monitoring compares. ``model_config={"backend": "onnx"}`` (optional
``threads``, ``batch_max_tokens``, ``max_length``) runs the int8 graph logged with the
version instead of the torch weights: what ``sentops serve`` runs, about three times faster on
CPU, where onnxruntime is installed (``sentops score --spark … --backend onnx``).

The model is logged the MLflow 3 way, as code: ``model_file.py`` (the model file, which
``mlflow.models.set_model``s a ``SentimentPyfunc``) plus this package as ``code_paths``, with
``pip_requirements`` pinned to the versions that logged it. So it loads wherever MLflow,
torch and transformers are installed, without ``sentiment_ops``: ``mlflow models serve``,
``mlflow.pyfunc.spark_udf``, ``mlflow models build-docker``. Versions logged before that (a
cloudpickled ``SentimentPyfunc``, ``code: null``) still load where sentops is installed: the
pickle, and the model file of versions logged before this module moved, name the class as
``sentiment_ops.pyfunc.SentimentPyfunc``, which that module re-exports.

The artifact layout (``ARTIFACT_KEY``, ``ONNX_ARTIFACT_KEY``, ``TOKENIZER_FILES``) is
defined here once; ``tracking.artifacts`` reads a logged model by it without loading it.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel

from sentiment_ops import textnorm
from sentiment_ops.errors import DataError, ModelLoadError, first_line
from sentiment_ops.inference.passes import Prediction, probability_columns

if TYPE_CHECKING:  # torch: imported when a model loads, so reading the layout needs none
    from sentiment_ops.modeling import SentimentModel

ARTIFACT_KEY = "hf_model"
ONNX_ARTIFACT_KEY = "onnx_int8"  # the int8 graph that serve.backend onnx runs (no torch needed)
# What ``TextEncoder`` reads of the ``hf_model`` folder: all a torch-free predictor downloads
# of it (no weights, no code a tokenizer could be told to import).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentops.json")
# padded tokens per pass of the int8 graph (model_config batch_max_tokens; serve.batch_max_tokens)
ONNX_MAX_TOKENS = 384
# The model_config logged with the model: MLflow lets a loader override only the keys logged
# (mlflow.pyfunc.load_model(uri, model_config=...), spark_udf(..., model_config=...)).
# threads None: all cores; max_length None: the trained one.
MODEL_CONFIG: dict[str, Any] = {
    "backend": "torch",
    "threads": None,
    "batch_max_tokens": ONNX_MAX_TOKENS,
    "max_length": None,
}
MODEL_NAME = "model"  # name of the logged model inside a run
MODEL_CODE = Path(__file__).with_name("model_file.py")  # the models-from-code file
PACKAGE_DIR = Path(__file__).parents[1]  # sentiment_ops: the code logged with the model
# What the loaded model imports (sentiment_ops travels as code_paths): pinned in its
# requirements to the versions that logged it. onnxruntime is not here: predict runs torch
# by default; the logged int8 graph is for `sentops serve` with serve.backend onnx, and for a
# loader that passes model_config {"backend": "onnx"} where onnxruntime is installed.
PREDICT_DISTRIBUTIONS = ("mlflow", "torch", "transformers", "tokenizers", "numpy", "pandas")

log = logging.getLogger(__name__)


def _texts(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        if "text" in model_input.columns:
            col = model_input["text"]
        elif model_input.shape[1] == 1:
            col = model_input.iloc[:, 0]
        else:
            raise DataError("model input needs a 'text' column")
        return [str(t) for t in col.tolist()]
    if isinstance(model_input, pd.Series):
        return [str(t) for t in model_input.tolist()]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, dict) and "text" in model_input:
        value = model_input["text"]
        return [value] if isinstance(value, str) else [str(t) for t in value]
    if isinstance(model_input, (list, tuple, np.ndarray)):
        return [str(t) for t in model_input]
    raise DataError(f"unsupported model input type {type(model_input).__name__}")


def prediction_frame(pred: Prediction, with_embedding: bool) -> pd.DataFrame:
    """The pyfunc's output: ``label`` (class index), ``label_name``, ``probability`` (P of
    positive: binary models only), ``confidence`` (P of the label), then one probability
    column per class (``passes.probability_columns``: ``p_negative``, ``p_neutral``, ...)."""
    columns: dict[str, Any] = {
        "label": pred.labels.astype(np.int64),
        "label_name": pred.label_names,
    }
    if pred.positive is not None:
        columns["probability"] = pred.positive.astype(np.float64)
    columns["confidence"] = pred.confidences.astype(np.float64)
    probs = np.asarray(pred.probabilities, dtype=np.float64).reshape(len(pred.labels), pred.classes.k)
    for i, name in enumerate(probability_columns(pred.classes)):
        columns[name] = probs[:, i]
    df = pd.DataFrame(columns)
    if with_embedding and pred.embeddings is not None:
        df["embedding"] = [row.astype(np.float64).tolist() for row in pred.embeddings]
    return df


class SentimentPyfunc(PythonModel):
    """Texts in; label, class probabilities (and optionally embedding) out."""

    # MLflow 3 wraps a subclass's predict for type-hint validation when the class is
    # defined, and warns (under its own "once" filter, which outer filters cannot silence)
    # when predict has no hints. The logged signature is this model's contract, and MLflow
    # enforces it on load either way, so opt out of the wrapping (and of the warning).
    _skip_type_hint_validation = True

    # Class-level defaults too: a version logged before models from code is a cloudpickled
    # instance, restored without __init__, so attributes added since must exist on the class.
    model: SentimentModel | None = None
    onnx: Any = None  # an inference.onnx.OnnxPredictor with model_config backend "onnx"
    max_tokens: int = ONNX_MAX_TOKENS

    def __init__(self) -> None:
        self.model = None
        self.onnx = None
        self.max_tokens = ONNX_MAX_TOKENS

    def load_context(self, context: Any) -> None:
        path = Path(context.artifacts[ARTIFACT_KEY])
        config = getattr(context, "model_config", None) or {}
        backend = config.get("backend") or "torch"
        if backend == "onnx":
            self.onnx = _onnx_predictor(path, context.artifacts.get(ONNX_ARTIFACT_KEY), config)
            self.max_tokens = int(config.get("batch_max_tokens") or ONNX_MAX_TOKENS)
            return
        if backend != "torch":
            raise ModelLoadError(f"model_config backend {backend!r}: torch (default) or onnx")
        from sentiment_ops.modeling import SentimentModel

        try:
            self.model = SentimentModel.from_dir(path, max_length=config.get("max_length"))
        except Exception as exc:
            raise ModelLoadError(f"cannot load sentiment model from {path}: {exc}") from exc

    # No type hints on purpose: MLflow 3 would try to derive a schema from them; the
    # signature logged with the model is the contract.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        with_embedding = bool((params or {}).get("return_embedding", False))
        texts = _texts(model_input)
        if self.onnx is not None:
            from sentiment_ops.inference.passes import forward_grouped

            pred = forward_grouped(self.onnx, self.onnx.encode(texts), max_tokens=self.max_tokens)
        elif self.model is not None:
            pred = self.model.predict(texts, with_embeddings=with_embedding)
        else:  # pragma: no cover - mlflow always calls load_context
            raise ModelLoadError("model not loaded")
        return prediction_frame(pred, with_embedding)


def _onnx_predictor(model_dir: Path, graph_dir: str | None, config: dict[str, Any]) -> Any:
    """The logged int8 graph behind the pyfunc (model_config ``{"backend": "onnx"}``, with
    ``threads``, ``max_length``): what ``sentops serve`` runs, without loading the torch
    weights. Needs onnxruntime, which the model's pinned requirements leave out."""
    from sentiment_ops.inference.onnx import ONNX_FILE, OnnxPredictor
    from sentiment_ops.inference.text import TextEncoder

    if graph_dir is None:
        raise ModelLoadError("model_config backend 'onnx': this version was logged without its int8 graph")
    try:
        encoder = TextEncoder(model_dir, max_length=config.get("max_length"))
        return OnnxPredictor(encoder, Path(graph_dir) / ONNX_FILE, config.get("threads"))
    except ImportError as exc:
        raise ModelLoadError(f"model_config backend 'onnx' needs onnxruntime: {exc}") from exc


def log_model(
    model: SentimentModel, work_dir: Path, *, run_id: str, model_id: str, extra_meta: dict[str, Any] | None = None
) -> Any:
    """Save ``model`` and log it as the artifacts of the logged model ``model_id`` of run
    ``run_id``; returns MLflow's ``ModelInfo``. MLflow takes the tracking URI from its global
    state here: call it through ``Registry.log_model``, which scopes that URI."""
    folder = model.save(work_dir / ARTIFACT_KEY, extra_meta=extra_meta)
    example = pd.DataFrame({"text": ["A moving, beautifully acted film.", "Dull and far too long."]})
    pred = model.predict(example["text"].tolist(), with_embeddings=False)
    signature = infer_signature(
        model_input=example,
        model_output=prediction_frame(pred, with_embedding=False),
        params={"return_embedding": False},
    )
    metadata = {"sentops": {textnorm.META_KEY: model.normalizer.spec.to_dict()}, **model.classes.to_meta()}
    artifacts = {ARTIFACT_KEY: str(folder)}
    onnx_dir = export_onnx(folder, work_dir / ONNX_ARTIFACT_KEY)
    if onnx_dir is not None:
        artifacts[ONNX_ARTIFACT_KEY] = str(onnx_dir)
    return _log(artifacts, signature, example, metadata, run_id=run_id, model_id=model_id)


def export_onnx(folder: Path, dest: Path) -> Path | None:
    """The int8 ONNX graph of the saved model ``folder``, logged with it so a server needs
    no torch to serve it. A model that does not export is logged without one (the server
    then exports it at load, as before, where torch is installed)."""
    from sentiment_ops.inference.onnx import ONNX_FILE, export_int8
    from sentiment_ops.modeling import SentimentModel

    try:
        # from the saved weights, as the server would: a model fresh out of the Trainer
        # does not always trace (seen: ComplexDouble)
        export_int8(SentimentModel.from_dir(folder), dest / ONNX_FILE)
    except Exception as exc:  # noqa: BLE001 - the graph is an optimisation, never a reason to lose the model
        log.warning("logging the model without its ONNX graph: %s: %s", type(exc).__name__, exc)
        return None
    return dest


def pip_requirements() -> list[str]:
    """``name==version`` for each distribution the predict path imports, as installed here.

    A local version label is dropped: torch reports ``2.13.0+cpu``, a label only PyTorch's
    own wheel index carries. ``torch==2.13.0`` matches ``2.13.0+cpu`` too (PEP 440: a pin
    without a label matches any label), so the requirement resolves from PyPI as it is and
    still installs the CPU build where the installer is given PyTorch's CPU index or a folder
    holding that wheel; pinned with ``+cpu`` it would be unresolvable on plain PyPI."""
    reqs = []
    for name in PREDICT_DISTRIBUTIONS:
        # mlflow-skinny: the same client without the tracking server's extras
        dist = "mlflow-skinny" if name == "mlflow" and _installed(name) is None else name
        pinned = _installed(dist)
        reqs.append(f"{dist}=={pinned}" if pinned else dist)
    return reqs


def _installed(dist: str) -> str | None:
    try:
        return version(dist).split("+")[0]
    except PackageNotFoundError:
        return None


def _log(
    artifacts: dict[str, str],
    signature: Any,
    example: pd.DataFrame,
    metadata: dict[str, Any],
    *,
    run_id: str,
    model_id: str,
) -> Any:
    from mlflow.models import Model

    # Model.log is what mlflow.pyfunc.log_model calls (with flavor=mlflow.pyfunc); only it
    # takes run_id=, which links the logged model to a run that is not the active one.
    # python_model is a file path (models from code: no cloudpickle); code_paths carries
    # this package (MLflow leaves out __pycache__), so the model imports it where sentops
    # is not installed.
    path, modules = list(sys.path), set(sys.modules)
    model_logger = logging.getLogger("mlflow.models.model")
    model_logger.addFilter(_config_params_warning)
    try:
        return Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=model_id,
            python_model=str(MODEL_CODE),
            code_paths=[str(PACKAGE_DIR)],
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            metadata=metadata,
            pip_requirements=pip_requirements(),
            model_config=dict(MODEL_CONFIG),
        )
    finally:  # MLflow runs the model file at logging too, and loads the model to check the example
        model_logger.removeFilter(_config_params_warning)
        _forget_model_code(path, modules)


def _config_params_warning(record: logging.LogRecord) -> bool:
    """False for MLflow's warning that the model_config could not be copied into the run's
    params. Model.log tries that for every model logged with a model_config; ours holds
    loader overrides (None: the trained value), so its ``max_length`` clashes with the run's
    own training param and every ``sentops train`` and ``retrain`` printed the warning. The
    config is in the MLmodel either way, where loaders read it."""
    return not record.getMessage().startswith("Failed to log model config as params")


def load_pyfunc(model_uri: str, name: str | None = None) -> SentimentPyfunc:
    """Load a logged model and return our PythonModel (for the fast serving path).

    ``model_uri`` is best a local folder (``Registry.load_model`` downloads a version into
    one): MLflow resolves a ``models:/`` or ``runs:/`` URI through its global URIs.
    ``name`` is what error messages call the model (default: ``model_uri``)."""
    name = name or model_uri
    path, modules = list(sys.path), set(sys.modules)
    try:
        loaded = mlflow.pyfunc.load_model(model_uri)
        inner = loaded.unwrap_python_model()
    except Exception as exc:
        raise ModelLoadError(f"cannot load {name}: {first_line(exc)}") from exc
    finally:
        _forget_model_code(path, modules)
    if not isinstance(inner, SentimentPyfunc) or inner.model is None:
        raise ModelLoadError(f"{name} is not a sentops model")
    return inner


def _forget_model_code(path: list[str], modules: set[str]) -> None:
    """Undo what loading a model from code leaves behind in this process (MLflow 3.17):
    the model's code folder first on ``sys.path`` (here sentiment_ops is imported already,
    and the folder is often a temporary download), the model file as a ``code_model_<uuid>``
    module, and ``mlflow.models.model.__mlflow_model__``, which would keep the last loaded
    model (and its weights) alive after the caller let it go."""
    sys.path[:] = path
    for key in set(sys.modules) - modules:
        if key.startswith("code_model_"):
            del sys.modules[key]
    from mlflow.models import model as mlflow_model_module

    if getattr(mlflow_model_module, "__mlflow_model__", None) is not None:
        mlflow_model_module.__mlflow_model__ = None
