"""The subcommands of benchmarks/graph.py: one module each (``add_arguments``, ``run``)."""
