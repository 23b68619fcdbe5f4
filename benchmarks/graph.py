"""The served model's int8 graph alone (no HTTP, no store): experiments on how it is made.

    flock /tmp/sentops-bench.lock python benchmarks/graph.py export|int8|arena --home HOME [--version 1]

- ``export``: The exported int8 graph: traced with transformers' SDPA attention vs its eager attention.

Exports the version's weights twice (``inference.onnx.export_int8`` with ``attention=
"sdpa"`` and ``"eager"``, the default since the SDPA trace was found to carry an IsNaN +
Where guard over every head x query x key in every layer), then runs both graphs on one
thread over the same tokenised texts, grouped as the server groups them
(``forward_grouped``, 256 padded tokens a pass: the serving ceiling's best): short (Rotten
Tomatoes test) and long (IMDB golden, 256 tokens head + tail). Rounds alternate between the
two graphs so that a change in the machine's load falls on both; the figure is the median
round. Also: how far the answers of each graph are from the torch model (labels that
differ, largest probability difference).

- ``int8``: Which int8 graph is fastest on this CPU: the quantisation settings the product logs
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

- ``arena``: The int8 graph alone with and without onnxruntime's CPU memory arena, by pass size.

The serving sessions run without the arena (``inference.onnx._session``): with it, two
inference threads passing batches of changing shapes through one session sometimes put
the server into a lasting slow state (``docs/benchmarks.md``). This measures what the
arena is worth to the graph alone, on one thread, tokenised beforehand, for three ways of
cutting the same texts into passes:

- ``budget``: sorted by length, passes of at most ``--pass-tokens`` padded tokens (the
  server's, the scorer's and the ceiling's rule, ``serve.batch_max_tokens``);
- ``single``: one text a pass (a lone request);
- ``random1-8``: 1 to 8 texts a pass in arrival order (long texts: up to ~2,000 tokens).

Rounds alternate the two sessions (arena on first in even rounds); the figure is the median
round's texts/s, with the minor page faults and system CPU of the first round of each.

Each writes its section of benchmarks/results/graph.json (``batch_bound.py``,
``serve_backends.py`` and ``serve_passes.py`` write theirs).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import RESULTS, load_average, write_result

from sentiment_ops.cli.common import quiet_third_party
from sentiment_ops.config import Settings, load_settings
from sentiment_ops.data import golden_test, load_corpus
from sentiment_ops.inference import forward_grouped, split_by_length
from sentiment_ops.inference.onnx import (
    OnnxPredictor,
    _run,
    _session,
    download_logged,
    export_fp32,
    export_int8,
    quantize_int8,
)
from sentiment_ops.inference.passes import pad
from sentiment_ops.registry import Registry
from sentiment_ops.scoring import OnnxFiles

OUT = RESULTS / "graph.json"
PASS_TOKENS = 256  # export and int8: the serving ceiling's best pass on one thread


def logged_graph(settings: Settings, version: int, tmp: tempfile.TemporaryDirectory[str]) -> tuple[Path, OnnxPredictor]:
    """The int8 graph logged with ``version`` (downloaded into ``tmp``) and a one-thread
    predictor over it that encodes as the server does."""
    found = download_logged(Registry(settings).download_uri(version), Path(tmp.name))
    if found is None:
        raise SystemExit(f"version {version} was logged without its int8 graph")
    return found[1], OnnxFiles(found[0], found[1], settings.serve.max_length, 1).build()


# -- export: eager vs SDPA attention ---------------------------------------------------------
def texts_per_s(predictor: OnnxPredictor, ids: list[list[int]]) -> float:
    start = time.perf_counter()
    forward_grouped(predictor, ids, max_tokens=PASS_TOKENS)
    return len(ids) / (time.perf_counter() - start)


def export(args: argparse.Namespace) -> None:
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


# -- int8: quantisation settings ---------------------------------------------------------------
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


def int8(args: argparse.Namespace) -> None:
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


# -- arena: onnxruntime's CPU memory arena by pass size ---------------------------------------
def cuts(ids: list[list[int]], pass_tokens: int) -> dict[str, list[list[list[int]]]]:
    lengths = [len(x) for x in ids]
    rng = random.Random(1)
    rand: list[list[list[int]]] = []
    i = 0
    while i < len(ids):
        n = rng.randint(1, 8)
        rand.append(ids[i : i + n])
        i += n
    return {
        "budget": [[ids[j] for j in group] for group in split_by_length(lengths, max_tokens=pass_tokens)],
        "single": [[x] for x in ids],
        "random1-8": rand,
    }


def timed(session: Any, passes: list[list[list[int]]], pad_id: int) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for batch in passes:
        _run(session, batch, pad_id)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    return seconds, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt


def arena(args: argparse.Namespace) -> None:
    """The logged int8 graph with and without the CPU memory arena, by how passes are cut."""

    settings = load_settings(overrides={"home": args.home})
    tmp = tempfile.TemporaryDirectory(prefix="sentops-arena-")
    graph, predictor = logged_graph(settings, args.version, tmp)
    sessions = {True: _session(graph, 1, arena=True), False: _session(graph, 1, arena=False)}
    corpora = {
        "short": load_corpus("rotten_tomatoes").test.texts[: args.short_texts],
        "long": golden_test(args.long_texts).texts,
    }
    load_before = load_average()
    result: dict[str, Any] = {}
    for kind, corpus in corpora.items():
        texts = list(corpus)
        random.Random(0).shuffle(texts)  # arrival order
        ids = predictor.tokenizer_model.encode(texts)
        result[kind] = {"texts": len(ids), "mean_tokens": round(sum(map(len, ids)) / len(ids), 1)}
        for name, passes in cuts(ids, args.pass_tokens).items():
            rounds: dict[bool, list[float]] = {True: [], False: []}
            first: dict[bool, dict[str, float]] = {}
            for r in range(args.rounds):
                for arena in (True, False) if r % 2 == 0 else (False, True):
                    seconds, sys_s, faults = timed(sessions[arena], passes, predictor.pad_id)
                    rounds[arena].append(round(len(ids) / seconds, 1))
                    first.setdefault(arena, {"system_cpu_s": round(sys_s, 2), "minor_faults": faults})
            on = round(statistics.median(rounds[True]), 1)
            off = round(statistics.median(rounds[False]), 1)
            cell = {
                "passes": len(passes),
                "largest_pass_tokens": max(len(b) * max(map(len, b)) for b in passes),
                "arena_on": {"texts_per_s": on, "rounds": rounds[True], **first[True]},
                "arena_off": {"texts_per_s": off, "rounds": rounds[False], **first[False]},
                "off_over_on": round(off / on, 3),
            }
            result[kind][name] = cell
            print(kind, name, json.dumps(cell), flush=True)
    result.update(pass_tokens=args.pass_tokens, threads=1, model_version=args.version)
    write_result(args.out, result, load_before, section="arena")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="experiment", required=True)
    options: dict[str, list[tuple[str, int]]] = {
        "export": [("--texts", 500), ("--rounds", 7)],
        "int8": [("--short", 300), ("--long", 80), ("--rounds", 3)],
        "arena": [("--short-texts", 400), ("--long-texts", 120), ("--rounds", 4), ("--pass-tokens", 384)],
    }
    for name, extra in options.items():
        p = sub.add_parser(name, help=globals()[name].__doc__)
        p.add_argument("--home", type=Path, required=True, help="a sentops home with a registered version")
        p.add_argument("--version", type=int, default=1)
        for flag, default in extra:
            p.add_argument(flag, type=int, default=default)
        p.add_argument("--out", type=Path, default=OUT, help=f"the JSON file (its section {name} is written)")
    args = ap.parse_args()
    quiet_third_party()
    globals()[args.experiment](args)


if __name__ == "__main__":
    main()
