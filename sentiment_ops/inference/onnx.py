"""The ONNX Runtime int8 backend (``serve.backend: onnx``).

The classifier is exported with ``torch.onnx.export`` as one graph: ``pooling.
LogitsAndPooled``, the module that the torch backend runs, returning the logits *and* the
mean-pooled last hidden state (so drift monitoring keeps its embedding from the same
forward pass), then quantised with ``onnxruntime.quantization.
quantize_dynamic`` (int8 weights per output channel, activations quantised on the fly).

The graph is made when the model is logged (``tracking.pyfunc.log_model``: the
``onnx_int8`` artifact of the model version), so serving needs neither torch nor
transformers: the predictor runs the graph with ONNX Runtime and encodes with
``inference.TextEncoder`` (``tokenizers`` only; ``tracking.artifacts`` downloads what it
reads). A version logged without the graph is exported at load (with torch, where it is
installed) and cached under ``<home>/serving-cache/``, keyed by name, version and run id
(``export_cache_dir``: the server and the drift reference share it).

Importing this module needs neither torch nor onnxruntime: the export imports torch, the
predictor onnxruntime, when they run."""

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
from sentiment_ops.inference.passes import pad
from sentiment_ops.labels import BINARY, LabelSet

if TYPE_CHECKING:
    from sentiment_ops.modeling import SentimentModel

log = logging.getLogger(__name__)

ONNX_FILE = "model.int8.onnx"
OPSET = 17
CACHE_DIR = "serving-cache"  # under the home: exports of versions logged without their graph


def export_cache_dir(home: Path, name: str, version: int, run_id: str | None) -> Path:
    """Where a model version's ONNX export is cached (the server's, shared by the drift
    reference): ``<home>/serving-cache/<name>-v<version>-<run id[:12]>``."""
    return Path(home) / CACHE_DIR / f"{name}-v{version}-{(run_id or '')[:12]}"


class Encoder(Protocol):
    """What the predictor needs to turn texts into ids: ``SentimentModel`` or the
    torch-free ``inference.TextEncoder``."""

    pad_id: int

    classes: LabelSet

    def encode(self, texts: list[str]) -> list[list[int]]: ...


def export_fp32(model: SentimentModel, dest: Path, attention: str = "eager") -> Path:
    """``pooling.LogitsAndPooled`` of ``model`` as an fp32 ONNX graph at ``dest``: inputs
    ``input_ids`` and ``attention_mask`` (padded by ``passes.pad``), outputs ``logits`` and
    ``pooled``. ``attention``: the transformers attention implementation traced (``eager``;
    ``sdpa`` only to compare, benchmarks/graph.py export)."""
    import copy

    import torch

    from sentiment_ops.inference.pooling import LogitsAndPooled

    # Traced with the eager attention (a copy: the caller's model keeps its own). The SDPA
    # path that transformers picks by default exports with a NaN guard per layer (IsNaN +
    # Where over every head x query x key); the eager one is plain MatMul + Add + Softmax.
    # Same numbers; the int8 graph of the default model ran long reviews 15 % faster on one
    # thread, short ones 3 % (docs/benchmarks.md, "The exported graph").
    classifier = copy.deepcopy(model.model).cpu().eval()
    if hasattr(classifier, "set_attn_implementation"):
        classifier.set_attn_implementation(attention)
    wrapper = LogitsAndPooled(classifier).eval()
    ids = torch.tensor([model.encode(["an example review to trace the graph"])[0]] * 2, dtype=torch.long)
    mask = torch.ones_like(ids)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shape checks folded to constants
        torch.onnx.export(
            wrapper,
            (ids, mask),
            str(dest),
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
    return dest


def quantize_int8(fp32: Path, dest: Path, **options: Any) -> Path:
    """``quantize_dynamic`` of the fp32 graph at ``fp32`` to ``dest`` with the settings every
    logged graph has (int8 weights, one scale per output channel); ``options`` override them
    (``benchmarks/graph.py int8`` compares others)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings: dict[str, Any] = {"weight_type": QuantType.QInt8, "per_channel": True, **options}
    quiet = logging.getLogger()  # the quantiser logs a pre-processing hint on the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32), str(dest), **settings)
    finally:
        quiet.setLevel(level)
    return dest


def export_int8(model: SentimentModel, dest: Path, attention: str = "eager") -> Path:
    """Export ``model`` to ONNX (``export_fp32``) and quantise it to int8 at ``dest``
    (``quantize_int8``; written atomically)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".export-") as tmp:
        fp32 = export_fp32(model, Path(tmp) / "model.fp32.onnx", attention)
        part = quantize_int8(fp32, Path(tmp) / ONNX_FILE)
        os.replace(part, dest)
    return dest


class OnnxPredictor:
    """A ``passes.Predictor`` like ``SentimentModel``: ``encode`` + ``forward_ids``.

    ``threads``: intra-op threads of a pass. With ``solo_threads`` above it, a second
    session of the same graph runs passes on that many threads (``solo``): the server uses
    it for a batch that runs alone, so a lone request has every idle core, while under load
    several single-thread passes run side by side."""

    backend = "onnx"

    def __init__(
        self, model: Encoder, onnx_path: Path, threads: int | None = None, solo_threads: int | None = None
    ) -> None:
        self.tokenizer_model = model  # tokeniser and truncation settings stay the trained ones
        self.pad_id = model.pad_id
        self.classes: LabelSet = getattr(model, "classes", BINARY)
        self.path = onnx_path
        self.threads = max(1, threads or os.cpu_count() or 1)
        self.session = _session(onnx_path, self.threads)
        self.solo: OnnxPredictor | _SoloView = self
        if solo_threads is not None and solo_threads > self.threads:
            self.solo = _SoloView(self, _session(onnx_path, solo_threads, spin=True), solo_threads)

    @classmethod
    def from_model(
        cls, model: SentimentModel, cache_dir: Path, threads: int | None = None, solo_threads: int | None = None
    ) -> OnnxPredictor:
        path = cache_dir / ONNX_FILE
        if not path.exists():
            log.info("exporting %s to ONNX int8 (cached for next time)", cache_dir.name)
            try:
                export_int8(model, path)
            except Exception as exc:
                shutil.rmtree(cache_dir, ignore_errors=True)
                raise ModelLoadError(f"cannot export the model to ONNX: {type(exc).__name__}: {exc}") from exc
        return cls(model, path, threads, solo_threads)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer_model.encode(texts)

    def forward_ids(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        return _run(self.session, batch, self.pad_id)


class _SoloView:
    """The predictor's passes on its many-thread session (``OnnxPredictor.solo``)."""

    backend = "onnx"

    def __init__(self, base: OnnxPredictor, session: Any, threads: int) -> None:
        self.base = base
        self.session = session
        self.threads = threads
        self.pad_id = base.pad_id
        self.classes = base.classes

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.base.encode(texts)

    def forward_ids(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        return _run(self.session, batch, self.pad_id)


def _session(onnx_path: Path, threads: int, arena: bool = False, spin: bool = False) -> Any:
    """An ONNX Runtime CPU session of ``onnx_path`` with ``threads`` intra-op threads
    (``arena``: with the CPU memory arena, for ``benchmarks/graph.py arena``; ``spin``: its
    threads spin within a pass, for the many-thread session of a lone pass)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No CPU memory arena: each Run allocates its activations with the system allocator and
    # frees them. With the arena, two inference threads running batches of changing shapes
    # on one session drove the serving process into a lasting slow state (long texts at 32
    # clients on 2 cores: 58 req/s in half of the 12-s cells instead of 74-77, both threads
    # still busy); without it, 10 of 10 cells ran at 73-75 and short texts at 32 clients
    # went from 434-475 to 476-511 req/s. The graph alone on one thread is as fast without
    # it for passes within the 384-token budget (serve.batch_max_tokens: 0.99-1.01x); passes
    # of 2,000 tokens are 15% slower (buffers mapped and faulted in anew; benchmarks/graph.py arena).
    opts.enable_cpu_mem_arena = arena
    # The one-thread sessions' idle workers must not spin: on a few cores they would steal
    # the CPU that the event loop and the other passes need. The many-thread session of a
    # lone pass (``spin``) spins within the pass and stops as it returns
    # (``session.force_spinning_stop``; with spinning left on, 40-60 ms of CPU burnt in the
    # 300 ms after a pass): a lone long review ~9 % faster on 2 AVX2 cores. It cost long
    # texts at 32 clients 4-7 % only while a batch taken in a gap under load counted as
    # alone, before the batcher required the batch before it to be alone too
    # (docs/benchmarks.md, "Lone passes").
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin:
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"cannot open ONNX model {onnx_path}: {exc}") from exc


def _run(session: Any, batch: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    input_ids, mask = pad(batch, pad_id)
    logits, pooled = session.run(None, {"input_ids": input_ids, "attention_mask": mask})
    return np.asarray(logits, dtype=np.float32), np.asarray(pooled, dtype=np.float32)
