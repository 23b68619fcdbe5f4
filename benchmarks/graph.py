"""The served model's int8 graph alone (no HTTP, no store): how it is made and how it runs.

    flock /tmp/sentops-bench.lock python benchmarks/graph.py SUBCOMMAND --home HOME [options]

- ``export``: the exported int8 graph traced with SDPA vs eager attention;
- ``int8``: the logged quantisation settings against the other int8 graphs;
- ``arena``: the graph with and without onnxruntime's CPU memory arena, by pass size;
- ``bound``: how close first-come-first-served batches can come to the serving ceiling;
- ``backends``: torch fp32 vs ONNX Runtime int8 on the served model (accuracy, latency);
- ``passes``: texts per pass and passes side by side (``serve.batch_max_tokens``,
  ``serve.inference_workers``).

Each subcommand is a module of benchmarks/graph_experiments/ (``--help`` after it says what
it measures) and writes its section of benchmarks/results/graph.json.
"""

from __future__ import annotations

import argparse
import importlib

from graph_experiments.common import OUT
from harness import common_arguments

from sentiment_ops.cli.common import quiet_third_party

SUBCOMMANDS = ("export", "int8", "arena", "bound", "backends", "passes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="experiment", required=True)
    modules = {name: importlib.import_module(f"graph_experiments.{name}") for name in SUBCOMMANDS}
    for name, module in modules.items():
        doc = module.__doc__ or ""
        p = sub.add_parser(
            name,
            help=" ".join(doc.split("\n\n")[0].split()),
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        common_arguments(p, OUT.name, "a sentops home with a registered version (read, never written)")
        module.add_arguments(p)
    args = ap.parse_args()
    quiet_third_party()
    modules[args.experiment].run(args)


if __name__ == "__main__":
    main()
