"""How close to the serving ceiling first-come-first-served batches can come: the graph alone.

The ceiling of ``benchmarks/serve_load.py`` runs the int8 graph on all the texts of a kind
sorted by length, in passes of its best token budget: almost no padding. A server cannot
sort what has not arrived. At C clients at most C texts are in it at once, and each
inference thread takes its batch from those that wait, in arrival order (``serving.batcher``:
a fair share between the threads, about one pass of ``serve.batch_max_tokens``), then sorts
and splits that batch (``forward_grouped``). This replays that on one thread with the graph
alone (no HTTP, no store; tokenised beforehand) over the same texts in a shuffled order:

- ``ceiling``: every text sorted by length, passes of ``--pass-tokens`` (the ceiling's grouping);
- ``server``: the batches the server forms at ``--clients`` clients with its default
  settings. A closed loop: C texts wait at the start; each inference thread takes a batch
  (``fair_share`` + ``take_fitting``, the server's own functions); the batch that started
  first finishes first and its clients send their next texts;
- ``all_at_once``: every text the C clients have in the server taken as one batch (the most
  any server could sort without holding answers back).

``server / ceiling`` bounds the efficiency of the server at C clients from above (the HTTP
path, tokenising and the store come on top). Rounds alternate between the groupings; the
figure is the median round. Writes the section ``bound`` of benchmarks/results/graph.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections import deque
from dataclasses import dataclass

from harness import load_average, write_result

from graph_experiments.common import logged_graph
from sentiment_ops.config import Settings, load_settings
from sentiment_ops.inference import forward_grouped, split_by_length
from sentiment_ops.inference.onnx import OnnxPredictor
from sentiment_ops.serving.batcher import fair_share, take_fitting


@dataclass
class Waiting:
    text: str
    index: int


def server_batches(texts: list[str], clients: int, settings: Settings, workers: int) -> list[list[int]]:
    """The batches (indices into ``texts``, which arrive in this order) of ``workers``
    inference threads under ``clients`` closed-loop clients."""
    serve = settings.serve
    first = min(clients, len(texts))  # each client's first text
    arrivals = iter(range(first, len(texts)))
    pending: deque[Waiting] = deque(Waiting(texts[i], i) for i in range(first))
    running: deque[list[Waiting]] = deque()
    out: list[list[int]] = []
    while pending or running:
        while pending and len(running) < workers:
            batch = [pending.popleft()]
            limit, budget = serve.batch_max_size, None
            if workers > 1:
                limit = fair_share(len(batch) + len(pending), serve.batch_max_size, workers)
                budget = serve.batch_max_tokens
            take_fitting(pending, batch, limit, budget)
            running.append(batch)
            out.append([w.index for w in batch])
        done = running.popleft()  # the batch that started first finishes first
        for _ in done:  # its clients send their next texts
            i = next(arrivals, None)
            if i is not None:
                pending.append(Waiting(texts[i], i))
    return out


def timed(predictor: OnnxPredictor, ids: list[list[int]], groups: list[list[int]], pass_tokens: int) -> float:
    start = time.perf_counter()
    for group in groups:
        forward_grouped(predictor, [ids[i] for i in group], max_tokens=pass_tokens)
    return len(ids) / (time.perf_counter() - start)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--texts", type=int, default=500)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pass-tokens", type=int, default=384, help="the ceiling's passes (its best on this machine)")


def run(args: argparse.Namespace) -> None:
    from sentiment_ops.data import golden_test, load_corpus
    from sentiment_ops.serving.holder import inference_workers

    settings = load_settings(overrides={"home": args.home})
    tmp = tempfile.TemporaryDirectory(prefix="sentops-bound-")
    _, predictor = logged_graph(settings, args.version, tmp)
    workers = inference_workers(settings)
    corpora = {"short": load_corpus("rotten_tomatoes").test.texts, "long": golden_test(args.texts).texts}
    load_before = load_average()
    result: dict[str, object] = {}
    for kind, corpus in corpora.items():
        texts = list(corpus[: args.texts])
        random.Random(0).shuffle(texts)  # arrival order
        ids = predictor.tokenizer_model.encode(texts)
        lengths = [len(x) for x in ids]
        groupings = {
            "ceiling": split_by_length(lengths, max_tokens=args.pass_tokens),
            "server": server_batches(texts, args.clients, settings, workers),
            "all_at_once": [list(range(i, min(i + args.clients, len(ids)))) for i in range(0, len(ids), args.clients)],
        }
        tokens = {name: settings.serve.batch_max_tokens for name in groupings} | {"ceiling": args.pass_tokens}
        for name, groups in groupings.items():
            timed(predictor, ids, groups[:3], tokens[name])  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in groupings}
        for _ in range(args.rounds):
            for name, groups in groupings.items():
                rates[name].append(timed(predictor, ids, groups, tokens[name]))
        cell: dict[str, object] = {"texts": len(ids), "mean_tokens": round(sum(lengths) / len(lengths), 1)}
        for name, groups in groupings.items():
            passes = [(g, p) for g in groups for p in split_by_length([lengths[i] for i in g], max_tokens=tokens[name])]
            padded = sum(len(p) * max(lengths[g[i]] for i in p) for g, p in passes)
            cell[name] = {
                "texts_per_s": round(statistics.median(rates[name]), 1),
                "rounds": [round(r, 1) for r in rates[name]],
                "batches": len(groups),
                "passes": len(passes),
                "padded_over_real_tokens": round(padded / sum(lengths), 3),
            }
        ceiling = statistics.median(rates["ceiling"])
        cell["server_over_ceiling"] = round(statistics.median(rates["server"]) / ceiling, 3)
        cell["all_at_once_over_ceiling"] = round(statistics.median(rates["all_at_once"]) / ceiling, 3)
        result[kind] = cell
        print(kind, json.dumps(cell), flush=True)
    tmp.cleanup()
    result.update(
        {
            "clients": args.clients,
            "inference_workers": workers,
            "batch_max_size": settings.serve.batch_max_size,
            "batch_max_tokens": settings.serve.batch_max_tokens,
            "pass_tokens": args.pass_tokens,
            "threads": 1,
            "model_version": args.version,
        }
    )
    write_result(args.out, result, load_before, section="bound")
