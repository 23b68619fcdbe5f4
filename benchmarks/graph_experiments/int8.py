"""Which int8 graph is fastest on this CPU: the quantisation settings the product logs
against the other ``quantize_dynamic`` settings and torch's own dynamic quantisation.

The version's model is exported to fp32 ONNX as ``sentops train`` does (eager attention),
then quantised four ways: ``logged`` (int8 weights per channel, the product's setting,
``inference.onnx.quantize_int8``), ``per_tensor`` (one scale per weight), ``reduce_range``
(7-bit weights, the setting onnxruntime suggests where VPMADDUBSW saturates) and ``u8u8``
(uint8 weights); ``fused`` and ``fused_no_attention`` are the fp32 graph rewritten first by
onnxruntime's transformer optimizer for BERT (``optimize_model``: Attention, SkipLayerNorm,
BiasGelu and EmbedLayerNorm fused; the second without the Attention fusion), then quantised
with the logged settings (``fused``: the fused attention as QAttention; the second: MatMuls
only); ``fp32`` is the unquantised graph; ``torch_dynamic`` is
``torch.ao.quantization.quantize_dynamic`` on the torch model (logits only). One thread
each, tokenised beforehand, passes of 256 tokens (sorted by length), alternating rounds;
the figure is the median. CPUs without AVX-512 VNNI run the int8 graph at about half the
speed of those with it (docs/benchmarks.md, "Serving load"): this says whether another
setting would win some of it back. ``labels_differ``: the share of texts whose label a graph
gives otherwise than the logged one.

Writes the section ``int8`` of benchmarks/results/graph.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import load_average, write_result

from graph_experiments.common import PASS_TOKENS
from sentiment_ops.config import load_settings
from sentiment_ops.data import golden_test, load_corpus
from sentiment_ops.inference import forward_grouped
from sentiment_ops.inference.onnx import OnnxPredictor, export_fp32, quantize_int8
from sentiment_ops.inference.passes import pad
from sentiment_ops.tracking.registry import Registry


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--short", type=int, default=300)
    ap.add_argument("--long", type=int, default=80)
    ap.add_argument("--rounds", type=int, default=3)


class TorchDynamic:
    """torch's dynamic int8 quantisation of the model's Linear layers, as a ``Predictor``
    for ``forward_grouped`` (logits; no pooled embedding)."""

    def __init__(self, model: Any, pad_id: int) -> None:
        import torch

        self.torch = torch
        self.pad_id = pad_id
        self.module = torch.ao.quantization.quantize_dynamic(
            model.model.cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8
        )

    def forward_ids(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = pad(batch, self.pad_id)
        with self.torch.inference_mode():
            out = self.module(input_ids=self.torch.from_numpy(ids), attention_mask=self.torch.from_numpy(mask))
        return out.logits.numpy(), np.zeros((len(batch), 1), np.float32)


def fused_fp32(fp32: Path, dest: Path, attention: bool) -> Path:
    """``fp32`` rewritten by onnxruntime's transformer optimizer for BERT (all-MiniLM-L6-v2:
    12 heads, hidden size 384), with or without the Attention fusion."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_attention = attention
    optimized = optimize_model(
        str(fp32), model_type="bert", num_heads=12, hidden_size=384, opt_level=0, optimization_options=options
    )
    optimized.save_model_to_file(str(dest))
    return dest


def run(args: argparse.Namespace) -> None:
    """The logged int8 settings against the other quantisations, timed alternately."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType

    settings = load_settings(overrides={"home": args.home})
    model = Registry(settings).load_model(args.version)
    assert model is not None
    tmp = tempfile.TemporaryDirectory(prefix="sentops-int8-")
    fp32 = export_fp32(model, Path(tmp.name) / "model.fp32.onnx")
    overrides: dict[str, dict[str, Any]] = {  # over the logged graph's settings (quantize_int8)
        "logged": {},
        "per_tensor": {"per_channel": False},
        "reduce_range": {"reduce_range": True},
        "u8u8": {"weight_type": QuantType.QUInt8},
    }
    predictors: dict[str, Any] = {}
    for name, options in overrides.items():
        dest = quantize_int8(fp32, Path(tmp.name) / f"{name}.int8.onnx", **options)
        predictors[name] = OnnxPredictor(model, dest, threads=1)
    fused_types = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # the contrib ops have no shape inference
    for name, attention in (("fused", True), ("fused_no_attention", False)):
        graph = fused_fp32(fp32, Path(tmp.name) / f"{name}.fp32.onnx", attention)
        only = {} if attention else {"op_types_to_quantize": ["MatMul"]}
        dest = quantize_int8(graph, Path(tmp.name) / f"{name}.int8.onnx", extra_options=fused_types, **only)
        predictors[name] = OnnxPredictor(model, dest, threads=1)
    predictors["fp32"] = OnnxPredictor(model, fp32, threads=1)
    torch.set_num_threads(1)
    predictors["torch_dynamic"] = TorchDynamic(model, predictors["logged"].pad_id)
    texts = {"short": load_corpus("rotten_tomatoes").test.texts[: args.short], "long": golden_test(args.long).texts}
    load_before = load_average()
    result: dict[str, Any] = {}
    for kind, items in texts.items():
        ids = model.encode(items)
        labels = {name: forward_grouped(p, ids, max_tokens=PASS_TOKENS).labels for name, p in predictors.items()}
        rates: dict[str, list[float]] = {name: [] for name in predictors}
        for _ in range(args.rounds):
            for name, predictor in predictors.items():
                start = time.perf_counter()
                forward_grouped(predictor, ids, max_tokens=PASS_TOKENS)
                rates[name].append(len(ids) / (time.perf_counter() - start))
        logged = statistics.median(rates["logged"])
        result[kind] = {
            name: {
                "texts_per_s": round(statistics.median(r), 1),
                "rounds": [round(x, 1) for x in r],
                "over_logged": round(statistics.median(r) / logged, 3),
                "labels_differ": round(float(np.mean(labels[name] != labels["logged"])), 4),
            }
            for name, r in rates.items()
        }
        print(kind, json.dumps({k: v["texts_per_s"] for k, v in result[kind].items()}), flush=True)
    tmp.cleanup()
    result.update({"threads": 1, "pass_tokens": PASS_TOKENS, "model_version": args.version})
    write_result(args.out, result, load_before, section="int8")
