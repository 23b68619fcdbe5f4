"""Serving load benchmark: `sentops serve` vs `mlflow models serve` and the model's own limit.

    flock /tmp/sentops-bench.lock python benchmarks/serve_load.py --home /tmp/acc-home [--quick]

HOME holds a trained, registered model; it is copied, never written. The load comes from
`wrk` (C, from Debian's ``wrk`` package: ``apt-get install wrk``), one thread, one keep-alive
connection per client, with ``serve_load.lua`` posting the bodies of a file (one per line,
cycled) and printing wrk's own latency percentiles and the answers by status. Texts: short
(Rotten Tomatoes test split) and long (IMDB golden reviews; the server truncates them as the
model was trained). Both servers run side by side (idle while the other is measured); for
each kind: a warm-up of each (not recorded), then per client count (1, 8, 32) sentops' cell
and right after it the baseline's, ``--seconds`` each (>= 20 for the recorded run), so that
each ratio compares neighbouring minutes: the speed of these shared cores drifts by 10-20 %
over minutes, measured.

- ``sentops``: ``sentops serve`` (``--workers`` N processes, default 1). After the cells the
  server is stopped gracefully and its inference store must hold one row per 2xx
  (``lost_rows``).
- ``mlflow_serve``: ``mlflow models serve --env-manager local`` on the same version.
- ``hot_reload``: under 8 clients a new version is promoted (the baseline stopped by then);
  failed requests, the time until the new version answers, answers from the old one after.
- ``ceiling``: the logged int8 graph alone on the same texts, tokenised beforehand, no HTTP
  and no store, with the best grouping (``score.ceiling_layout``: token budget per pass and
  one process with all cores or one 1-thread process per core, searched on the texts once
  before the cells), timed for ``--seconds``/2 right before and right after sentops' cell at
  32 clients (the highest client count); ``texts_per_s`` is their mean and ``efficiency`` =
  served texts/s in that cell / ``texts_per_s``, per kind.

Every cell has ``p99_over_p50``; the JSON has the load average before and after.
``--quick``: 5 s cells, 2 s warm-ups, a smaller ceiling search (a check, not a record).

Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import harness
import httpx
from harness import ROOT, ServeProcess, free_port, load_average, write_result
from machine import wait_idle

LUA = Path(__file__).parent / "serve_load.lua"
PY = sys.executable


# -- load ---------------------------------------------------------------------------------
def wrk(
    port: int, path: str, body_file: Path, clients: int, seconds: float, new_version: int | None = None
) -> dict[str, Any]:
    """One closed-loop cell: ``clients`` keep-alive connections for ``seconds``."""
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(LUA)]
    cmd += [f"http://127.0.0.1:{port}", "--", str(body_file), path]
    if new_version is not None:
        cmd.append(str(new_version))
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    match = re.search(r"^LOAD_RESULT (.*)$", out.stdout, re.M)
    if out.returncode != 0 or match is None:
        sys.exit(f"wrk failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
    res = json.loads(match.group(1))
    ok = sum(v for k, v in res["statuses"].items() if k.startswith("2"))
    elapsed = res["duration_us"] / 1e6
    lat = res["latency_ms"]
    return {
        "rps": round(ok / elapsed, 1),
        "p50_ms": round(lat["p50"], 1),
        "p95_ms": round(lat["p95"], 1),
        "p99_ms": round(lat["p99"], 1),
        "p99_over_p50": round(lat["p99"] / max(lat["p50"], 1e-9), 2),
        "max_ms": round(lat["max"], 1),
        "errors": res["requests"] - ok + sum(res["socket_errors"].values()),
        "non_2xx": res["requests"] - ok,
        "socket_errors": res["socket_errors"],
        "requests": res["requests"],
        "ok": ok,
        "seconds": round(elapsed, 1),
        "old_after_new": res["old_after_new"],
    }


def write_bodies(work: Path, texts: dict[str, list[str]]) -> tuple[dict[str, Path], dict[str, Path]]:
    """One file per kind of ``/predict`` bodies and one of ``/invocations`` bodies."""
    ours, theirs = {}, {}
    for kind, items in texts.items():
        ours[kind] = work / f"{kind}.predict.jsonl"
        ours[kind].write_text("".join(json.dumps({"text": t}) + "\n" for t in items))
        theirs[kind] = work / f"{kind}.mlflow.jsonl"
        theirs[kind].write_text(
            "".join(json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t]]}}) + "\n" for t in items)
        )
    return ours, theirs


# -- servers ------------------------------------------------------------------------------
def env_for(home: Path, store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTOPS_")}
    env.update(
        {
            "SENTOPS_HOME": str(home),
            "SENTOPS_STORE__URL": f"sqlite:///{store}",
            "PYTHONPATH": str(ROOT),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "TOKENIZERS_PARALLELISM": "false",
            # mlflow models serve starts `uvicorn` through bash: the venv's bin must be on PATH
            "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def sentops_cmd(*args: str) -> list[str]:
    return [PY, "-m", "sentiment_ops.cli.main", *args]


def run_cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(sentops_cmd(*args), env=env, capture_output=True, text=True, check=True)
    return out.stdout


# -- phases -------------------------------------------------------------------------------
def start_sentops(env: dict[str, str], work: Path, args: argparse.Namespace) -> ServeProcess:
    extra = ["--backend", args.backend] + (["--workers", str(args.workers)] if args.workers > 1 else [])
    server = ServeProcess(env, extra, log_path=work / "sentops.log")
    server.wait_ready(600)
    print(f"sentops serve ({args.backend}, {args.workers} worker(s)) on :{server.port}", flush=True)
    return server


def start_mlflow(env: dict[str, str], work: Path, version: int) -> ServeProcess:
    port = free_port()
    cmd = [str(Path(PY).parent / "mlflow"), "models", "serve", "--env-manager", "local"]
    cmd += ["-m", f"models:/sentiment-classifier/{version}", "-p", str(port), "-h", "127.0.0.1"]
    server = ServeProcess(env, port=port, log_path=work / "mlflow.log", command=cmd)
    server.wait_ready(600, path="/ping")
    print(f"mlflow models serve on :{port}", flush=True)
    return server


class Ceiling:
    """The logged int8 graph of the version alone on each kind's texts, tokenised
    beforehand, no HTTP and no store: the best grouping is searched once
    (``score.ceiling_layout``: token budget per pass x one process on all cores or one
    1-thread process per core), then timed right before and right after the served cell it
    is compared with (``measure``), so that a change in the speed of these shared cores
    between minutes falls on both."""

    def __init__(self, home: Path, version: int, texts: dict[str, list[str]], quick: bool) -> None:
        from score import TOKEN_BUDGETS, ceiling_layout

        from sentiment_ops.config import load_settings
        from sentiment_ops.scoring import OnnxFiles
        from sentiment_ops.tracking.artifacts import download_logged
        from sentiment_ops.tracking.registry import Registry

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        settings = load_settings(overrides={"home": home})
        self._tmp = tempfile.TemporaryDirectory(prefix="sentops-load-graph-")
        found = download_logged(Registry(settings).download_uri(version), Path(self._tmp.name))
        if found is None:
            raise SystemExit(f"version {version} was logged without its int8 graph: no ceiling")
        self.files = OnnxFiles(found[0], found[1], settings.serve.max_length, 1)
        encoder = self.files.build().tokenizer_model
        self.ids = {kind: encoder.encode(items) for kind, items in texts.items()}  # not timed
        budgets = (384, 1536) if quick else TOKEN_BUDGETS
        self.result: dict[str, dict[str, Any]] = {}
        for kind, ids in self.ids.items():
            self.result[kind] = ceiling_layout(self.files, ids, budgets)
            print(f"  ceiling layout {kind:5s} {self.result[kind]['best']}", flush=True)

    def measure(self, kind: str, seconds: float) -> float:
        """Texts/s of the best grouping on this kind's texts, cycled to about ``seconds``."""
        from score import time_passes

        cell = self.result[kind]
        best = cell["best"]
        n = max(len(self.ids[kind]), int(seconds * max(cell["probe_texts_per_s"].values())))
        ids = [self.ids[kind][i % len(self.ids[kind])] for i in range(n)]
        rate = time_passes(self.files, ids, best["max_tokens"], best["processes"], best["threads"])
        cell.setdefault("timed", []).append(round(rate, 1))
        cell["timed_texts"] = n
        return rate

    def close(self) -> None:
        self._tmp.cleanup()


def run_cells(
    ports: dict[str, int],
    files: dict[str, dict[str, Path]],
    levels: list[int],
    args: argparse.Namespace,
    ceiling: Ceiling | None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every cell of every server, side by side: per kind and client count, sentops' cell
    then the baseline's, so each ratio compares minutes next to each other; at the top
    client count the ceiling is timed right before and after sentops' cell."""
    paths = {"sentops": "/predict", "mlflow_serve": "/invocations"}
    out: dict[str, dict[str, dict[str, Any]]] = {server: {} for server in ports}
    for kind in ("short", "long"):
        for server, port in ports.items():
            wrk(port, paths[server], files[server][kind], 4, args.warmup)  # warm-up, not recorded
            out[server][kind] = {}
        for c in levels:
            top = c == max(levels) and ceiling is not None
            for server, port in ports.items():
                if top and server == "sentops" and ceiling is not None:
                    ceiling.measure(kind, args.seconds / 2)
                r = wrk(port, paths[server], files[server][kind], c, args.seconds)
                waited = wait_idle()  # the requests wrk left queued: not beside the next cell or the ceiling
                r.pop("old_after_new")
                r["drain_s"] = round(waited, 2)
                out[server][kind][f"c{c}"] = r
                print(
                    f"  {server:12s} {kind:5s} c{c:<2d} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:6.1f}  "
                    f"p99 {r['p99_ms']:7.1f} ({r['p99_over_p50']:.2f}x)  errors {r['errors']}",
                    flush=True,
                )
                if top and server == "sentops" and ceiling is not None:
                    ceiling.measure(kind, args.seconds / 2)
                    timed = ceiling.result[kind]["timed"]
                    ceiling.result[kind]["texts_per_s"] = round(sum(timed) / len(timed), 1)
                    print(f"  ceiling      {kind:5s} {timed} texts/s (before, after)", flush=True)
    return out


def main() -> None:
    ap = harness.parser(
        __doc__, "serve_load.json", "sentops home with a registered model (copied, never written)", False
    )
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--reload-seconds", type=float, default=40.0)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--texts", type=int, default=500, help="texts of each kind (cycled)")
    ap.add_argument("--backend", default=None, help="sentops backend (default: the serve.backend default)")
    ap.add_argument("--workers", type=int, default=1, help="sentops serve --workers")
    ap.add_argument("--quick", action="store_true", help="5 s cells, 2 s warm-ups, a smaller ceiling search")
    ap.add_argument("--skip-mlflow", action="store_true")
    ap.add_argument("--skip-reload", action="store_true")
    ap.add_argument("--skip-ceiling", action="store_true")
    ap.add_argument("--render", default=None, help="print a results JSON as a markdown table and exit")
    args = ap.parse_args()
    if args.render:
        print(markdown(json.loads(Path(args.render).read_text())))
        return
    if not args.home:
        ap.error("--home is required")
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    if args.quick:
        args.seconds, args.warmup = min(args.seconds, 5.0), 2.0
    load_before = load_average()  # other work on these shared cores
    levels = [int(x) for x in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="sentops-load-"))
    home = work / "home"
    shutil.copytree(Path(args.home).resolve(), home)  # promoted and registered into: a copy
    env = env_for(home, work / "inference.db")

    sys.path.insert(0, str(ROOT))
    from sentiment_ops.config import Settings
    from sentiment_ops.data import golden_test, load_corpus

    args.backend = args.backend or Settings().serve.backend
    texts = {"short": load_corpus("rotten_tomatoes").test.texts[: args.texts], "long": golden_test(args.texts).texts}
    ours, theirs = write_bodies(work, texts)
    run_cli(env, "promote", "--version", str(args.version))
    result: dict[str, Any] = {
        "backend": args.backend,
        "model_version": args.version,
        "seconds_per_run": args.seconds,
        "workers": args.workers,
        "load_generator": "wrk -t1, one keep-alive connection per client (benchmarks/serve_load.lua)",
        "order": "per kind and client count: sentops' cell, then mlflow's; the ceiling right before and after "
        "sentops' cell at the top client count",
    }
    servers: list[ServeProcess] = []
    ceiling = None
    try:
        servers.append(start_sentops(env, work, args))
        port = servers[0].port
        ports = {"sentops": port}
        if not args.skip_mlflow:
            servers.append(start_mlflow(env, work, args.version))
            ports["mlflow_serve"] = servers[-1].port
        ceiling = None if args.skip_ceiling else Ceiling(home, args.version, texts, args.quick)
        before = time.perf_counter()
        result.update(run_cells(ports, {"sentops": ours, "mlflow_serve": theirs}, levels, args, ceiling))
        result["cells_seconds"] = round(time.perf_counter() - before, 1)
        if not args.skip_mlflow:
            servers.pop().stop(120)  # the baseline is done: the hot reload runs alone
        if not args.skip_reload:
            result["hot_reload"] = hot_reload(port, env, ours["short"], args.version, args.reload_seconds)
        served = _served_ok(port, args.workers)
    finally:
        for server in servers:
            server.stop(120)
        if ceiling is not None:
            ceiling.close()
    rows = _rows(work / "inference.db")
    result.update(stored_rows=rows, served_2xx=served, lost_rows=served - rows)
    print(f"stored rows {rows}, 2xx predictions {served}, lost {served - rows}", flush=True)
    if not args.skip_mlflow:
        result["speedup_vs_mlflow"] = {
            kind: {
                c: round(result["sentops"][kind][c]["rps"] / max(result["mlflow_serve"][kind][c]["rps"], 1e-9), 2)
                for c in result["sentops"][kind]
            }
            for kind in result["sentops"]
        }
    if ceiling is not None:
        result["ceiling"] = ceiling.result
        top = f"c{max(levels)}"
        result["efficiency"] = {
            kind: round(result["sentops"][kind][top]["rps"] / result["ceiling"][kind]["texts_per_s"], 3)
            for kind in texts
        }
        result["efficiency_at"] = top
    write_result(args.out, result, load_before)
    keys = ("lost_rows", "hot_reload", "speedup_vs_mlflow", "efficiency", "load_average_before", "load_average_after")
    print(json.dumps({k: v for k, v in result.items() if k in keys}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def markdown(result: dict[str, Any]) -> str:
    """The results as the table in docs/benchmarks.md."""
    lines = [
        "| texts | clients | sentops req/s | p50 / p99 ms | p99/p50 | errors | mlflow req/s | p50 / p99 ms "
        "| errors | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = result.get("mlflow_serve", {})
    for kind in ("short", "long"):
        for c, r in result["sentops"][kind].items():
            b = base.get(kind, {}).get(c)
            ratio = r.get("p99_over_p50") or r["p99_ms"] / max(r["p50_ms"], 1e-9)
            ours = f"{r['rps']} | {r['p50_ms']} / {r['p99_ms']} | {ratio:.2f} | {r['errors']}"
            theirs = f"{b['rps']} | {b['p50_ms']} / {b['p99_ms']} | {b['errors']}" if b else "– | – | –"
            speedup = f"{r['rps'] / b['rps']:.2f}x" if b else "–"
            lines.append(f"| {kind} | {c[1:]} | {ours} | {theirs} | {speedup} |")
    if "ceiling" in result:
        lines.append("")
        for kind, ceil in result["ceiling"].items():
            lines.append(
                f"- {kind}: ceiling {ceil['texts_per_s']} texts/s ({ceil['best']}), served at "
                f"{result.get('efficiency_at', 'c32')} = {result['efficiency'][kind]:.1%} of it"
            )
    return "\n".join(lines)


def _served_ok(port: int, workers: int) -> int:
    """2xx answers of /predict, from the servers' own counters (wrk does not count the
    answers in flight when a cell ends; they are stored too), once they stop moving."""
    last, now = -1, _count_ok(port, workers)
    for _ in range(30):
        if now == last:
            break
        time.sleep(1.0)
        last, now = now, _count_ok(port, workers)
    return now


def _count_ok(port: int, workers: int) -> int:
    """Each worker process has its own counters: scrape on new connections until every
    process has answered."""
    counts: dict[str, int] = {}
    for _ in range(100 * workers):
        with httpx.Client(timeout=10) as client:
            text = client.get(f"http://127.0.0.1:{port}/metrics").text
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        pid = values.get("sentops_process_id", "one")
        counts[pid] = int(float(values.get('sentops_requests_total{endpoint="/predict",outcome="2xx"}', 0)))
        if len(counts) >= workers:
            break
    return sum(counts.values())


def _rows(store: Path) -> int:
    import sqlite3

    with sqlite3.connect(store) as db:
        return int(db.execute("select count(*) from predictions").fetchone()[0])


def hot_reload(port: int, env: dict[str, str], body_file: Path, version: int, seconds: float) -> dict[str, Any]:
    """8 wrk clients on /predict; a new version of the same run is promoted after 5 s; a
    probe asks every 50 ms which version answers."""
    info = json.loads(run_cli(env, "models", "--json"))
    run_id = next(v["run_id"] for v in info if v["version"] == version)
    new = json.loads(run_cli(env, "register", "--run-id", run_id, "--json"))["version"]
    box: dict[str, Any] = {}
    load = threading.Thread(target=lambda: box.update(wrk(port, "/predict", body_file, 8, seconds, new)))
    load.start()
    time.sleep(5.0)
    t_cmd = time.perf_counter()
    run_cli(env, "promote", "--version", str(new))
    t_moved = time.perf_counter()
    first_new = None
    with httpx.Client(timeout=30) as client:
        while load.is_alive():
            r = client.post(f"http://127.0.0.1:{port}/predict", json={"text": "a probe of the hot reload"})
            if first_new is None and r.status_code == 200 and r.json()["model"]["version"] == new:
                first_new = time.perf_counter()
            time.sleep(0.05)
    load.join()
    stats = box
    out = {
        "new_version": new,
        "requests": stats["requests"],
        "failed_requests": stats["errors"],
        # from the moment `sentops promote` returned (the alias has moved)
        "seconds_to_new_version": None if first_new is None else round(first_new - t_moved, 2),
        # from the moment `sentops promote` was started (includes its own start-up)
        "seconds_from_promote_command": None if first_new is None else round(first_new - t_cmd, 2),
        "old_version_answers_after_switch": stats["old_after_new"],
        "p99_ms_during_reload": stats["p99_ms"],
    }
    print(f"  hot reload: {out}", flush=True)
    return out


if __name__ == "__main__":
    main()
