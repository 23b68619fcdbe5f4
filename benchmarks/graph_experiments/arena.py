"""The int8 graph alone with and without onnxruntime's CPU memory arena, by pass size.

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

Writes the section ``arena`` of benchmarks/results/graph.json.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
from typing import Any

from harness import load_average, write_result

from graph_experiments.common import logged_graph
from sentiment_ops.config import load_settings
from sentiment_ops.data import golden_test, load_corpus
from sentiment_ops.inference import split_by_length
from sentiment_ops.inference.onnx import _run, _session


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--short-texts", type=int, default=400)
    ap.add_argument("--long-texts", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--pass-tokens", type=int, default=384)


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


def run(args: argparse.Namespace) -> None:
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
