"""The logged model loads through plain MLflow and honours its signature."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import yaml

from sentiment_ops.config import load_settings
from sentiment_ops.tracking.artifacts import logged_predictor
from sentiment_ops.tracking.pyfunc import pip_requirements
from sentiment_ops.tracking.registry import Registry


def test_pyfunc_through_registry(trained: dict[str, Any], plain_mlflow: str) -> None:
    registry = Registry(load_settings())
    model = mlflow.pyfunc.load_model("models:/sentiment-classifier/1")
    sig = model.metadata.signature
    assert [c.name for c in sig.inputs.inputs] == ["text"]
    assert {c.name for c in sig.outputs.inputs} >= {"label", "probability"}
    assert sig.params is not None and sig.params.to_dict()[0]["name"] == "return_embedding"

    df = pd.DataFrame({"text": ["great movie", "terrible plot", "meh"]})
    out = model.predict(df)
    # the binary columns as always, then one probability column per class
    assert list(out.columns) == ["label", "label_name", "probability", "confidence", "p_negative", "p_positive"]
    np.testing.assert_allclose(out["p_positive"], out["probability"])
    assert model.metadata.metadata["labels"] == ["negative", "positive"]
    assert set(out["label"]) <= {0, 1}
    assert out["label_name"].tolist() == [["negative", "positive"][i] for i in out["label"]]

    with_emb = model.predict(df, params={"return_embedding": True})
    emb = np.array(with_emb["embedding"].tolist())
    assert emb.shape == (3, 32)
    np.testing.assert_allclose(with_emb["probability"], out["probability"], rtol=1e-6)
    assert registry.get_version(1).source.startswith("models:/")


def test_model_config_onnx_runs_the_logged_int8_graph(trained: dict[str, Any], plain_mlflow: str) -> None:
    """``model_config={"backend": "onnx"}``: plain MLflow runs the graph ``sentops serve`` runs
    (its numbers, not the torch weights'), with embeddings on request; a wrong backend is a
    load error naming the choices."""
    import pytest

    from sentiment_ops.errors import ModelLoadError
    from sentiment_ops.inference.passes import forward_grouped

    texts = ["great movie", "terrible plot, dull and long", "meh", "an <b>uneven</b> but moving film 🎬"]
    registry = Registry(load_settings())
    served = logged_predictor(registry.download_uri(1), threads=1)
    assert served is not None
    want = forward_grouped(served, served.encode(texts), max_tokens=384)
    model = mlflow.pyfunc.load_model("models:/sentiment-classifier/1", model_config={"backend": "onnx", "threads": 1})
    out = model.predict(pd.DataFrame({"text": texts}), params={"return_embedding": True})
    np.testing.assert_allclose(out["probability"], want.probabilities[:, 1], atol=1e-6)
    assert out["label"].tolist() == want.labels.tolist()
    assert want.embeddings is not None
    np.testing.assert_allclose(np.array(out["embedding"].tolist()), want.embeddings, atol=1e-5)
    torch_out = mlflow.pyfunc.load_model("models:/sentiment-classifier/1").predict(pd.DataFrame({"text": texts}))
    assert not np.array_equal(torch_out["probability"].to_numpy(), out["probability"].to_numpy())  # int8 ≠ fp32
    with pytest.raises(ModelLoadError, match="torch \\(default\\) or onnx"):
        mlflow.pyfunc.load_model("models:/sentiment-classifier/1", model_config={"backend": "tensorrt"})


def test_logged_as_code_with_pinned_requirements(trained: dict[str, Any], tmp_path: Path) -> None:
    """Models from code: the model file and the package as code, nothing pickled; the
    requirements pin what the predict path imports, and nothing pip cannot resolve."""
    from mlflow.artifacts import download_artifacts

    registry = Registry(load_settings())
    local = Path(download_artifacts(artifact_uri=registry.download_uri(1), dst_path=str(tmp_path)))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    conf = mlmodel["flavors"]["python_function"]
    assert conf["code"] == "code" and conf["model_code_path"].endswith("model_file.py")
    assert "python_model" not in conf and not list(local.glob("*.pkl"))
    assert (local / "code" / "sentiment_ops" / "tracking" / "pyfunc.py").is_file()
    assert not list((local / "code").rglob("__pycache__"))
    assert set(conf["artifacts"]) == {"hf_model", "onnx_int8"}  # the int8 graph travels too
    assert mlmodel["metadata"]["sentops"]["text_normalizer"] == {"name": "sentops.clean", "version": 1}

    reqs = (local / "requirements.txt").read_text().split()
    assert reqs == pip_requirements()
    assert [r.split("==")[0] for r in reqs] == ["mlflow", "torch", "transformers", "tokenizers", "numpy", "pandas"]
    assert all("==" in r and "+" not in r for r in reqs), reqs  # torch 2.13.0+cpu → torch==2.13.0
    assert not any(r.startswith("sentiment") for r in reqs)


def test_versions_whose_model_file_imports_the_old_path_still_load(trained: dict[str, Any], tmp_path: Path) -> None:
    """The model file of versions logged before the model moved into ``tracking`` imports
    ``sentiment_ops.pyfunc.SentimentPyfunc``: such a version loads, as the same model."""
    from mlflow.artifacts import download_artifacts

    from sentiment_ops.tracking.pyfunc import load_pyfunc

    registry = Registry(load_settings())
    local = Path(download_artifacts(artifact_uri=registry.download_uri(1), dst_path=str(tmp_path)))
    conf = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    model_file = local / Path(conf["model_code_path"]).name
    model_file.write_text(
        "from mlflow.models import set_model\n\n"
        "from sentiment_ops.pyfunc import SentimentPyfunc\n\n"
        "set_model(SentimentPyfunc())\n"
    )
    old = load_pyfunc(str(local)).model
    assert old is not None
    texts = ["great movie", "terrible plot"]
    a, b = registry.load_model(1).predict(texts), old.predict(texts)
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-6)


@contextmanager
def mlflow_warnings(*names: str) -> Iterator[list[str]]:
    """What MLflow's loggers (default: pyfunc) warn meanwhile (tests quiet them to ERROR;
    they do not propagate to pytest's handler)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    loggers = [logging.getLogger(name) for name in names or ("mlflow.pyfunc",)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
        logger.addHandler(handler)
    try:
        yield messages
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def test_no_pickle_warning_and_pickled_versions_still_load(
    trained: dict[str, Any], tmp_path: Path, plain_mlflow: str
) -> None:
    """Logging warns no more about CloudPickle; a version logged the old way (a cloudpickled
    SentimentPyfunc, no code) still loads, as the same model."""
    from mlflow.models import Model

    from sentiment_ops.tracking.client import global_tracking_uri
    from sentiment_ops.tracking.pyfunc import ARTIFACT_KEY, SentimentPyfunc

    registry = Registry(load_settings())
    path, modules = list(sys.path), set(sys.modules)
    model = registry.load_model(1)
    # loading leaves no trace: code folder, model-file module, MLflow's last-model global
    assert sys.path == path and not [m for m in set(sys.modules) - modules if m.startswith("code_model_")]
    assert mlflow.models.model.__mlflow_model__ is None
    run_id = trained["run_id"]
    with mlflow_warnings("mlflow.pyfunc", "mlflow.models.model") as messages:
        registry.log_model(run_id, model, tmp_path / "new", extra_meta={})
    assert not [m for m in messages if "CloudPickle" in m], messages
    # nor about copying the model_config into the run's params (its max_length, None: the
    # trained one, clashes with the run's training param); the run keeps its own value
    assert not [m for m in messages if "model config" in m], messages
    assert registry.client.get_run(run_id).data.params.get("max_length") == str(model.max_length)

    # the format of earlier versions, as pyfunc._log wrote it: a pickled instance of the class
    # as it was then (attributes added since, like the ONNX mode's, are not in its __dict__)
    folder = model.save(tmp_path / "old" / ARTIFACT_KEY)
    then = SentimentPyfunc()
    for added in ("onnx", "max_tokens"):
        del then.__dict__[added]
    old_id = registry.client.create_logged_model(registry.experiment_id(), name="old", source_run_id=run_id).model_id
    # pickled by the module path earlier versions name (sentiment_ops.pyfunc, now a re-export)
    importlib.import_module("sentiment_ops.pyfunc")
    SentimentPyfunc.__module__ = "sentiment_ops.pyfunc"
    try:
        with global_tracking_uri(registry.tracking_uri), mlflow_warnings() as messages:
            info = Model.log(
                artifact_path=None,
                name="old",
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=old_id,
                python_model=then,
                artifacts={ARTIFACT_KEY: str(folder)},
                pip_requirements=["sentiment-ops==0.1.0", "torch", "transformers", "pandas", "numpy"],
            )
    finally:
        SentimentPyfunc.__module__ = "sentiment_ops.tracking.pyfunc"
    assert [m for m in messages if "CloudPickle" in m]  # what the check above would have seen
    version = registry.register(run_id, source=info.model_uri).version
    old = registry.load_model(version)
    texts = ["great movie<br />really", "terrible plot", "meh"]
    a, b = model.predict(texts, with_embeddings=False), old.predict(texts, with_embeddings=False)
    assert a.labels.tolist() == b.labels.tolist()
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-6)
    # and it predicts through plain MLflow (what mlflow models serve and spark_udf call)
    out = mlflow.pyfunc.load_model(f"models:/sentiment-classifier/{version}").predict(pd.DataFrame({"text": texts}))
    assert out["label"].tolist() == a.labels.tolist()


def test_import_does_not_nag_about_type_hints() -> None:
    """MLflow warns at class definition when predict has no type hints, under its own filter
    that callers cannot silence; the class opts out, so commands print no such warning."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import sentiment_ops.pyfunc"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "type hints" not in result.stderr
