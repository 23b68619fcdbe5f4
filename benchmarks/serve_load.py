"""Serving load benchmark: `sentops serve` vs `mlflow models serve` on the same model.

    cp -r /tmp/bench-acc /tmp/serve-bench-home      # a home with a trained, registered model
    flock /tmp/sentops-bench.lock python benchmarks/serve_load.py --home /tmp/serve-bench-home

A closed-loop load generator (asyncio, one keep-alive HTTP/1.1 connection per client, a
minimal hand-written client so that the generator spends as little as possible of the
2 cores it shares with the server) at concurrency 1, 8 and 32, with short texts (Rotten
Tomatoes test split) and long texts (IMDB golden split; the server truncates them as the
model was trained), ``--seconds`` each (>= 20 for the recorded run). The baseline is
`mlflow models serve --env-manager local` on the same version. After the sentops runs
the server is stopped gracefully and its inference store must hold one row per 2xx
(``lost_rows``). Finally a hot reload under an 8-client load: a new version is promoted
and we record failed requests and the time until the new version answers.

Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "serve_load.json"
PY = sys.executable


# -- a minimal keep-alive HTTP client --------------------------------------------------
class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        chunked = False
        for line in lines[1:]:
            key, _, value = line.partition(":")
            if key.lower() == "content-length":
                length = int(value)
            elif key.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            data = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                data += chunk[:-2]
            return status, data
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def closed_loop(
    port: int, path: str, bodies: list[bytes], clients: int, seconds: float, on_body: Any = None
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds

    async def client(i: int) -> None:
        conn = Conn("127.0.0.1", port)
        n = i
        while time.perf_counter() < stop_at:
            body = bodies[n % len(bodies)]
            n += clients
            t = time.perf_counter()
            try:
                status, data = await conn.post(path, body)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(repr(exc))
                conn.close()
                conn = Conn("127.0.0.1", port)
                continue
            latencies.append((time.perf_counter() - t) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if on_body is not None and status == 200:
                on_body(data)
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "rps": round(ok / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "errors": len(errors) + (len(latencies) - ok),
        "requests": len(latencies),
        "ok": ok,
        "seconds": round(elapsed, 1),
    }


# -- servers ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
def load_matrix(port: int, path: str, kinds: dict[str, list[bytes]], levels: list[int], seconds: float) -> dict:
    out: dict[str, dict[str, Any]] = {}
    total_ok = 0
    for kind, bodies in kinds.items():
        out[kind] = {}
        asyncio.run(closed_loop(port, path, bodies, 4, 3.0))  # warm-up, not recorded
        for c in levels:
            r = asyncio.run(closed_loop(port, path, bodies, c, seconds))
            out[kind][f"c{c}"] = r
            total_ok += r["ok"]
            print(
                f"  {kind:5s} c{c:<2d} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:6.1f}  p99 {r['p99_ms']:7.1f}  "
                f"errors {r['errors']}",
                flush=True,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", help="sentops home with a registered model (a copy: it is modified)")
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--backend", default=None, help="sentops backend (default: the serve.backend default)")
    ap.add_argument("--skip-mlflow", action="store_true")
    ap.add_argument("--skip-reload", action="store_true")
    ap.add_argument("--out", default=str(RESULTS), help="where to write the JSON")
    ap.add_argument("--render", default=None, help="print a results JSON as a markdown table and exit")
    args = ap.parse_args()
    if args.render:
        print(markdown(json.loads(Path(args.render).read_text())))
        return
    if not args.home:
        ap.error("--home is required")
    home = Path(args.home).resolve()
    load_before = [round(x, 2) for x in os.getloadavg()]  # other work on these shared cores
    levels = [int(x) for x in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="sentops-load-"))
    store = work / "inference.db"
    env = env_for(home, store)

    sys.path.insert(0, str(ROOT))
    from sentiment_ops.config import Settings
    from sentiment_ops.data import golden_test, load_corpus

    backend = args.backend or Settings().serve.backend
    short = load_corpus("rotten_tomatoes").test.texts[:500]
    long = golden_test(500).texts
    as_predict = {k: [json.dumps({"text": t}).encode() for t in v] for k, v in (("short", short), ("long", long))}
    as_mlflow = {
        k: [json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t]]}}).encode() for t in v]
        for k, v in (("short", short), ("long", long))
    }
    run_cli(env, "promote", "--version", str(args.version))
    result: dict[str, Any] = {"backend": backend, "model_version": args.version, "seconds_per_run": args.seconds}

    # sentops serve ------------------------------------------------------------------------
    port = free_port()
    log = open(work / "sentops.log", "wb")
    proc = subprocess.Popen(
        sentops_cmd("serve", "--port", str(port), "--backend", backend), env=env, stdout=log, stderr=subprocess.STDOUT
    )
    ok_total = 0
    try:
        wait_ready(f"http://127.0.0.1:{port}/ready", proc)
        print(f"sentops serve ({backend}) on :{port}", flush=True)
        before = time.perf_counter()
        matrix = load_matrix(port, "/predict", as_predict, levels, args.seconds)
        result["sentops"] = matrix
        result["sentops_seconds"] = round(time.perf_counter() - before, 1)
        ok_total = _served_ok(port)
        if not args.skip_reload:
            result["hot_reload"] = hot_reload(port, env, as_predict["short"], args.version)
            ok_total = _served_ok(port)
    finally:
        stop(proc)
        log.close()
    rows = _rows(store)
    result["stored_rows"] = rows
    result["served_2xx"] = ok_total
    result["lost_rows"] = ok_total - rows
    print(f"stored rows {rows}, 2xx predictions {ok_total}, lost {ok_total - rows}", flush=True)

    # mlflow models serve ------------------------------------------------------------------
    if not args.skip_mlflow:
        port = free_port()
        mlog = open(work / "mlflow.log", "wb")
        mlflow_bin = str(Path(PY).parent / "mlflow")
        proc = subprocess.Popen(
            [
                mlflow_bin,
                "models",
                "serve",
                "--env-manager",
                "local",
                "-m",
                f"models:/sentiment-classifier/{args.version}",
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
            ],
            env=env,
            stdout=mlog,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}/ping", proc)
            print(f"mlflow models serve on :{port}", flush=True)
            result["mlflow_serve"] = load_matrix(port, "/invocations", as_mlflow, levels, args.seconds)
        finally:
            stop(proc)
            mlog.close()
        result["speedup_vs_mlflow"] = {
            kind: {
                c: round(result["sentops"][kind][c]["rps"] / max(result["mlflow_serve"][kind][c]["rps"], 1e-9), 2)
                for c in result["sentops"][kind]
            }
            for kind in result["sentops"]
        }

    result.update(
        {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.now(UTC).date().isoformat(),
            "command": f"flock /tmp/sentops-bench.lock python benchmarks/serve_load.py --home HOME "
            f"--seconds {args.seconds:g}" + (f" --backend {args.backend}" if args.backend else ""),
        }
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps({k: v for k, v in result.items() if k in ("lost_rows", "hot_reload", "speedup_vs_mlflow")}, indent=2)
    )


def markdown(result: dict[str, Any]) -> str:
    """The results as the table in docs/benchmarks.md."""
    lines = [
        "| texts | clients | sentops req/s | p50 / p95 / p99 ms | errors | mlflow req/s | p50 / p95 / p99 ms "
        "| errors | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = result.get("mlflow_serve", {})
    for kind in ("short", "long"):
        for c, r in result["sentops"][kind].items():
            b = base.get(kind, {}).get(c)
            ours = f"{r['rps']} | {r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} | {r['errors']}"
            theirs = f"{b['rps']} | {b['p50_ms']} / {b['p95_ms']} / {b['p99_ms']} | {b['errors']}" if b else "– | – | –"
            speedup = f"{r['rps'] / b['rps']:.2f}x" if b else "–"
            lines.append(f"| {kind} | {c[1:]} | {ours} | {theirs} | {speedup} |")
    return "\n".join(lines)


def _served_ok(port: int) -> int:
    """2xx answers of /predict so far, from the server's own counter."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('sentops_requests_total{endpoint="/predict",outcome="2xx"}'):
            return int(float(line.split()[-1]))
    return 0


def _rows(store: Path) -> int:
    import sqlite3

    with sqlite3.connect(store) as db:
        return int(db.execute("select count(*) from predictions").fetchone()[0])


def hot_reload(port: int, env: dict[str, str], bodies: list[bytes], version: int) -> dict[str, Any]:
    """8 clients on /predict; promote a new version of the same run; time the switch."""
    info = json.loads(run_cli(env, "models", "--json"))
    run_id = next(v["run_id"] for v in info if v["version"] == version)
    new = json.loads(run_cli(env, "register", "--run-id", run_id, "--json"))["version"]
    seen: list[tuple[float, int]] = []

    def on_body(data: bytes) -> None:
        seen.append((time.perf_counter(), json.loads(data)["model"]["version"]))

    async def scenario() -> tuple[dict[str, Any], float, float]:
        load = asyncio.create_task(closed_loop(port, "/predict", bodies, 8, 40.0, on_body))
        await asyncio.sleep(5.0)
        t_cmd = time.perf_counter()
        await asyncio.to_thread(run_cli, env, "promote", "--version", str(new))
        t_moved = time.perf_counter()
        return await load, t_cmd, t_moved

    stats, t_cmd, t_move = asyncio.run(scenario())
    first_new = next((t for t, v in seen if v == new), None)
    old_after = [t for t, v in seen if v != new and first_new is not None and t > first_new]
    out = {
        "new_version": new,
        "requests": stats["requests"],
        "failed_requests": stats["errors"],
        # from the moment `sentops promote` returned (the alias has moved)
        "seconds_to_new_version": None if first_new is None else round(first_new - t_move, 2),
        # from the moment `sentops promote` was started (includes its own ~2 s start-up)
        "seconds_from_promote_command": None if first_new is None else round(first_new - t_cmd, 2),
        "old_version_answers_after_switch": len(old_after),
        "p99_ms_during_reload": stats["p99_ms"],
    }
    print(f"  hot reload: {out}", flush=True)
    return out


if __name__ == "__main__":
    main()
