"""The exported int8 graph: traced with transformers' SDPA attention vs its eager attention.

Exports the version's weights twice (``inference.onnx.export_int8`` with ``attention=
"sdpa"`` and ``"eager"``, the default since the SDPA trace was found to carry an IsNaN +
Where guard over every head x query x key in every layer), then runs both graphs on one
thread over the same tokenised texts, grouped as the server groups them
(``forward_grouped``, 256 padded tokens a pass: the serving ceiling's best): short (Rotten
Tomatoes test) and long (IMDB golden, 256 tokens head + tail). Rounds alternate between the
two graphs so that a change in the machine's load falls on both; the figure is the median
round. Also: how far the answers of each graph are from the torch model (labels that
differ, largest probability difference).

Writes the section ``export`` of benchmarks/results/graph.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import load_average, write_result

from graph_experiments.common import PASS_TOKENS
from sentiment_ops.config import load_settings
from sentiment_ops.data import golden_test, load_corpus
from sentiment_ops.inference import forward_grouped
from sentiment_ops.inference.onnx import OnnxPredictor, export_int8
from sentiment_ops.tracking.registry import Registry


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--texts", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=7)


def texts_per_s(predictor: OnnxPredictor, ids: list[list[int]]) -> float:
    start = time.perf_counter()
    forward_grouped(predictor, ids, max_tokens=PASS_TOKENS)
    return len(ids) / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> None:
    """The version's weights exported twice (SDPA and eager attention), timed alternately."""
    settings = load_settings(overrides={"home": args.home})
    model = Registry(settings).load_model(args.version)
    assert model is not None
    tmp = Path(tempfile.mkdtemp(prefix="sentops-export-"))
    graphs = {}
    for attention in ("sdpa", "eager"):
        path = export_int8(model, tmp / attention / "model.int8.onnx", attention=attention)
        graphs[attention] = OnnxPredictor(model, path, threads=1)
    texts = {
        "short": load_corpus("rotten_tomatoes").test.texts[: args.texts],
        "long": golden_test(args.texts).texts,
    }
    load_before = load_average()
    result: dict[str, object] = {}
    for kind, items in texts.items():
        ids = model.encode(items)
        torch_pred = forward_grouped(model, ids, max_tokens=PASS_TOKENS)
        rates: dict[str, list[float]] = {name: [] for name in graphs}
        for _ in range(args.rounds):
            for name, predictor in graphs.items():
                rates[name].append(texts_per_s(predictor, ids))
        cell: dict[str, object] = {"texts": len(ids), "mean_tokens": round(float(np.mean([len(x) for x in ids])), 1)}
        for name, predictor in graphs.items():
            pred = forward_grouped(predictor, ids, max_tokens=PASS_TOKENS)
            cell[name] = {
                "texts_per_s": round(statistics.median(rates[name]), 1),
                "rounds": [round(r, 1) for r in rates[name]],
                "labels_differ_from_torch": int((pred.labels != torch_pred.labels).sum()),
                "max_probability_diff_from_torch": round(
                    float(np.abs(pred.probabilities - torch_pred.probabilities).max()), 4
                ),
            }
        cell["eager_over_sdpa"] = round(statistics.median(rates["eager"]) / statistics.median(rates["sdpa"]), 3)
        result[kind] = cell
        print(kind, json.dumps(cell), flush=True)
    result.update(
        {
            "threads": 1,
            "pass_tokens": PASS_TOKENS,
            "model_version": args.version,
        }
    )
    write_result(args.out, result, load_before, section="export")
