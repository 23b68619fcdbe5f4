"""ONNX Runtime int8 serving backend (``serve.backend: onnx``).

The classifier is exported with ``torch.onnx.export`` as one graph that returns the
logits *and* the mean-pooled last hidden state (so drift monitoring keeps its embedding
from the same forward pass), then quantised with ``onnxruntime.quantization.
quantize_dynamic`` (int8 weights per output channel, activations quantised on the fly).

The graph is made when the model is logged (``pyfunc.log_model``: the ``onnx_int8``
artifact of the model version), so serving needs neither torch nor transformers: the
predictor runs the graph with ONNX Runtime and encodes with ``inference.TextEncoder``
(``tokenizers`` only). A version logged without the graph is exported at load (with
torch, where it is installed) and cached under ``<home>/serving-cache/``, keyed by name,
version and run id."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sentiment_ops.errors import ModelLoadError

if TYPE_CHECKING:
    from sentiment_ops.modeling import SentimentModel

log = logging.getLogger("sentiment_ops.serving")

ONNX_FILE = "model.int8.onnx"
OPSET = 17


class Encoder(Protocol):
    """What the predictor needs to turn texts into ids: ``SentimentModel`` or the
    torch-free ``inference.TextEncoder``."""

    pad_id: int

    def encode(self, texts: list[str]) -> list[list[int]]: ...


def _logits_and_pooled(model: Any) -> Any:
    """The classifier as one module returning (logits, mean-pooled last hidden state)."""
    import torch

    class LogitsAndPooled(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            hidden = out.hidden_states[-1]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return out.logits, pooled

    return LogitsAndPooled(model).eval()


def export_int8(model: SentimentModel, dest: Path) -> Path:
    """Export ``model`` to ONNX and quantise it to int8 at ``dest`` (written atomically)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        wrapper = _logits_and_pooled(model.model.cpu())
        ids = torch.tensor([model.encode(["an example review to trace the graph"])[0]] * 2, dtype=torch.long)
        mask = torch.ones_like(ids)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about shape checks folded to constants
            torch.onnx.export(
                wrapper,
                (ids, mask),
                str(fp32),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits", "pooled"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "seq"},
                    "attention_mask": {0: "batch", 1: "seq"},
                    "logits": {0: "batch"},
                    "pooled": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter needs no onnxscript and handles HF models
            )
        part = Path(tmp) / ONNX_FILE
        quiet = logging.getLogger()  # the quantiser logs a pre-processing hint on the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            quantize_dynamic(str(fp32), str(part), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            quiet.setLevel(level)
        os.replace(part, dest)
    return dest


class OnnxPredictor:
    """Same interface as ``SentimentModel`` for the batcher: ``encode`` + ``forward_ids``."""

    backend = "onnx"

    def __init__(self, model: Encoder, onnx_path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.tokenizer_model = model  # tokeniser and truncation settings stay the trained ones
        self.pad_id = model.pad_id
        self.path = onnx_path
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = max(1, threads or os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle worker threads must not spin: on a few cores they would steal the CPU that the
        # event loop needs to parse the next requests.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"cannot open ONNX model {onnx_path}: {exc}") from exc

    @classmethod
    def from_model(cls, model: SentimentModel, cache_dir: Path, threads: int | None = None) -> OnnxPredictor:
        path = cache_dir / ONNX_FILE
        if not path.exists():
            log.info("exporting %s to ONNX int8 (cached for next time)", cache_dir.name)
            try:
                export_int8(model, path)
            except Exception as exc:
                shutil.rmtree(cache_dir, ignore_errors=True)
                raise ModelLoadError(f"cannot export the model to ONNX: {type(exc).__name__}: {exc}") from exc
        return cls(model, path, threads)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer_model.encode(texts)

    def forward_ids(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(ids) for ids in batch)
        input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, ids in enumerate(batch):
            input_ids[i, : len(ids)] = ids
            mask[i, : len(ids)] = 1
        logits, pooled = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})
        return np.asarray(logits, dtype=np.float32), np.asarray(pooled, dtype=np.float32)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")


def logged_predictor(model_uri: str, threads: int | None = None, max_length: int | None = None) -> OnnxPredictor | None:
    """The predictor of a model version logged with its int8 graph (``onnx_int8``), made
    without torch: the graph, the tokenizer files and ``sentops.json`` are downloaded (not
    the weights) and loaded into memory. None when the version was logged without a graph."""
    import yaml
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from sentiment_ops.inference import TextEncoder
    from sentiment_ops.registry import mlflow_errors

    with tempfile.TemporaryDirectory(prefix="sentops-logged-") as tmp, mlflow_errors(f"download {model_uri}"):
        repo = get_artifact_repository(model_uri)
        mlmodel = yaml.safe_load(Path(repo.download_artifacts("MLmodel", tmp)).read_text())
        artifacts = (mlmodel.get("flavors", {}).get("python_function", {}) or {}).get("artifacts") or {}
        graph, hf_model = artifacts.get("onnx_int8"), artifacts.get("hf_model")
        if not graph or not hf_model:
            return None
        graph_dir = Path(repo.download_artifacts(graph["path"], tmp))
        for item in repo.list_artifacts(hf_model["path"]):
            if not item.is_dir and not item.path.endswith(WEIGHT_SUFFIXES):
                repo.download_artifacts(item.path, tmp)
        encoder = TextEncoder(Path(tmp) / hf_model["path"], max_length=max_length)
        return OnnxPredictor(encoder, graph_dir / ONNX_FILE, threads)
