"""Alias history benchmark: promote / rollback / history with a long history.

    python benchmarks/alias_history.py                         # 10,000 moves, SQLite
    python benchmarks/alias_history.py --moves 1000 --postgres # mlflow server on PostgreSQL

A history of ``--moves`` moves is written into the registry as promote writes it (the chunk
tags and the head of sentiment_ops.alias_history, in one go: making 10,000 real promotions
first would only time the seeding); then ``--repeat`` times each of ``promote``,
``rollback`` and ``history``, in process (the registry call alone) and through the real CLI
(``sentops promote --json`` etc. in a new process, so Python, MLflow and torch start-up
included). ``--postgres`` starts a throwaway PostgreSQL and ``mlflow server`` with
tests/local_services.py (needs the PostgreSQL binaries and psycopg).

Writes benchmarks/results/alias_history.json (merging keys: ``sqlite_<moves>`` /
``postgres_server_<moves>``)
and prints the entry.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
from harness import ROOT, load_average, write_result

sys.path.insert(0, str(ROOT / "tests"))


def seed(registry: Any, moves: int, versions: int) -> None:
    from mlflow import MlflowClient

    from sentiment_ops.tracking.alias_history import AliasLog, Move

    client: MlflowClient = registry.client
    client.create_registered_model(registry.model_name)
    run = client.create_run(registry.experiment_id())
    source = f"{run.info.artifact_uri}/model"
    for _ in range(versions):
        client.create_model_version(registry.model_name, source=source, run_id=run.info.run_id)
    log = AliasLog("production", {})
    for i in range(moves):
        frm = None if i == 0 else 1 + (i - 1) % versions
        log.append(Move(datetime.now(UTC).isoformat(timespec="seconds"), frm, 1 + i % versions, "promote", i - 1))
    log.save(*registry._tag_writers())
    client.set_registered_model_alias(registry.model_name, "production", str(1 + (moves - 1) % versions))


def timed(fn: Any, repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4)}


def cli(env: dict[str, str], *args: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sentiment_ops.cli.main", *args], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"sentops {' '.join(args)} exited {out.returncode}: {out.stderr}")


def main() -> None:
    parser = harness.parser(__doc__, "alias_history.json", None)
    parser.add_argument("--moves", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", action="store_true", help="mlflow server on a throwaway PostgreSQL")
    args = parser.parse_args()
    load_before = load_average()

    from sentiment_ops.cli.common import quiet_third_party

    quiet_third_party()
    base = Path(tempfile.mkdtemp(prefix="sentops-bench-history-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTOPS_", "MLFLOW_"))}
    env.update({"SENTOPS_HOME": str(base / "home"), "PYTHONPATH": str(ROOT)})
    stop: list[Any] = []
    if args.postgres:
        from local_services import start_mlflow_server, start_postgres

        cluster = start_postgres()
        stop.append(cluster.stop)
        server = start_mlflow_server(cluster.create_database("mlflow_bench"), base / "art", base / "mlflow.log")
        stop.insert(0, server.stop)
        env["MLFLOW_TRACKING_URI"] = server.url
    os.environ.update(env)
    try:
        from sentiment_ops.config import load_settings
        from sentiment_ops.tracking.registry import Registry

        registry = Registry(load_settings())
        t0 = time.perf_counter()
        seed(registry, args.moves, versions=4)
        seeded_s = time.perf_counter() - t0
        entry: dict[str, Any] = {
            "moves": args.moves,
            "backend": "mlflow server on PostgreSQL" if args.postgres else "SQLite",
            "seed_s": round(seeded_s, 1),
            "in_process": {
                "promote": timed(lambda: registry.promote(2), args.repeat),
                "rollback": timed(registry.rollback, args.repeat),
                "history": timed(lambda: registry.history("production"), args.repeat),
            },
            "cli": {
                # the same command on an alias without history: Python + MLflow start-up
                "baseline: sentops models --history (empty alias) --json": timed(
                    lambda: cli(env, "models", "--history", "candidate", "--json"), args.repeat
                ),
                "sentops promote": timed(lambda: cli(env, "promote", "--version", "3", "--json"), args.repeat),
                "sentops rollback": timed(lambda: cli(env, "rollback", "--json"), args.repeat),
                "sentops models --history --json": timed(
                    lambda: cli(env, "models", "--history", "production", "--json"), args.repeat
                ),
                "sentops models --history (table)": timed(
                    lambda: cli(env, "models", "--history", "production"), args.repeat
                ),
            },
            "history_length_after": len(registry.history("production")),
        }
    finally:
        for fn in stop:
            fn()
        shutil.rmtree(base, ignore_errors=True)
    key = f"{'postgres_server' if args.postgres else 'sqlite'}_{args.moves}"
    print(json.dumps(write_result(args.out, entry, load_before, section=key), indent=2))


if __name__ == "__main__":
    main()
