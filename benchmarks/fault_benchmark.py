"""Fault benchmark: `sentops serve` on PostgreSQL under load while things go wrong.

    apt-get install wrk postgresql          # the C load generator and the server binaries
    python benchmarks/fault_benchmark.py    # trains two quick versions in a temp home (~3 min)
    python benchmarks/fault_benchmark.py --home /tmp/bench-home   # or use a home with >= 2 versions

For ``--seconds`` (120) `wrk` (C, one thread, ``--clients`` keep-alive connections, 8) posts
/predict against one `sentops serve` whose inference store is a throwaway PostgreSQL cluster,
while at the same time:

1. PostgreSQL is stopped (fast shutdown) ``--outage-at`` seconds in, for ``--outage-s`` (20)
   seconds, and started again on the same data and port;
2. ``--bad-share`` (1 %) of the texts carry NUL and other control characters;
3. the production alias moves between two versions every ``--alias-every`` (10) seconds.

Recorded: answers by status (2xx, 422, 503, 5xx), socket errors, the rows the store holds and
the rows it dead-lettered after a graceful shutdown, /ready polled twice a second (when it said
503 and why), and the versions that answered. Target: stored + dead-lettered = 2xx answers, no
5xx, and 503 only while the store is out (docs/serving.md says when /predict answers 503).

Writes benchmarks/results/fault.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import harness
import httpx
import sqlalchemy as sa
from harness import ROOT, ServeProcess, load_average, write_result

from sentiment_ops.errors import SentopsError

sys.path.insert(0, str(ROOT / "tests"))
from local_services import PostgresCluster, start_postgres

LUA = Path(__file__).parent / "serve_load.lua"  # POST /predict bodies, counts statuses
PY = sys.executable

# Control characters as careless clients send them: NUL from C strings, ANSI colour codes,
# a bell, a form feed, DEL, a unit separator.
BAD_INSERTS = ["\x00", "\x1b[31m", "\x07", "\x0c", "\x7f", "\x00\x00", "\x1f", "\x01\x02"]

QUICK_TRAIN_ENV = {  # two quick versions of the bundled MiniLM (the answers matter, not their quality)
    "SENTOPS_TRAIN__MAX_SAMPLES": "256",
    "SENTOPS_TRAIN__EVAL_SAMPLES": "200",
    "SENTOPS_TRAIN__VAL_SAMPLES": "100",
    "SENTOPS_TRAIN__MAX_LENGTH": "128",
    "SENTOPS_TRAIN__REFERENCE_SAMPLES": "200",
}


def sentops(env: dict[str, str], *args: str, timeout: float = 1800) -> str:
    out = subprocess.run(
        [PY, "-m", "sentiment_ops.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"sentops {' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


def make_bodies(path: Path, n: int, bad_share: float, seed: int) -> dict[str, int]:
    import random

    from sentiment_ops.data import load_corpus

    rng = random.Random(seed)
    texts = list(load_corpus("rotten_tomatoes").test.texts)
    rng.shuffle(texts)
    texts = (texts * (n // max(len(texts), 1) + 1))[:n]
    bad = 0
    with path.open("w") as f:
        for clean in texts:
            text = clean
            if rng.random() < bad_share:
                cut = rng.randrange(len(text) + 1)
                text = text[:cut] + rng.choice(BAD_INSERTS) + text[cut:]
                bad += 1
            f.write(json.dumps({"text": text}) + "\n")
    return {"bodies": n, "bad_bodies": bad}


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def add(self, kind: str, **fields: Any) -> None:
        with self.lock:
            self.events.append({"t": self.now(), "event": kind, **fields})


def pg_pause_resume(cluster: PostgresCluster, at: float, seconds: float, tl: Timeline, stop: threading.Event) -> None:
    if stop.wait(at):
        return
    tl.add("postgres_stop")
    cluster.pause()  # fast shutdown: open sessions are cut
    tl.add("postgres_stopped")
    stop.wait(seconds)
    cluster.resume()
    tl.add("postgres_started")


def alias_mover(env: dict[str, str], versions: list[int], every: float, tl: Timeline, stop: threading.Event) -> None:
    from sentiment_ops.config import load_settings
    from sentiment_ops.tracking.registry import Registry

    registry = Registry(load_settings(environ=env))
    i = 0
    while not stop.wait(every):
        i += 1
        v = versions[i % len(versions)]
        try:
            registry.promote(v)
            tl.add("promote", version=v)
        except Exception as exc:  # recorded; the run goes on
            tl.add("promote_failed", version=v, error=str(exc)[:200])


def ready_poller(url: str, tl: Timeline, stop: threading.Event, samples: list[dict[str, Any]]) -> None:
    """/ready twice a second; the timeline gets each change of status (with its reason)."""
    last: int | None = None
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            try:
                r = client.get(f"{url}/ready")
                status, detail = r.status_code, str(r.json().get("detail") or "")
            except (httpx.HTTPError, ValueError) as exc:
                status, detail = 0, repr(exc)
            samples.append({"t": tl.now(), "status": status, "detail": detail[:300]})
            if status != last:
                tl.add("ready", status=status, detail=detail[:300])
                last = status
            stop.wait(0.5)


def served_2xx(url: str) -> int:
    """/predict answers with a 2xx status that the server itself counted (sentops_requests)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(r'^sentops_requests_total\{endpoint="/predict",outcome="2xx"\} (\S+)$', text, re.M)
    return int(float(match.group(1))) if match else 0


def count_rows(url: str) -> dict[str, Any]:
    engine = sa.create_engine(url)

    def scalar(sql: str) -> Any:
        with engine.connect() as conn:  # one transaction each: a missing table aborts only its own
            return conn.execute(sa.text(sql)).scalar_one()

    out: dict[str, Any] = {"stored": scalar("SELECT count(*) FROM predictions")}
    with engine.connect() as conn:
        by_version = conn.execute(
            sa.text("SELECT model_version, count(*) FROM predictions GROUP BY model_version ORDER BY 1")
        ).all()
    out["stored_by_version"] = {str(v): n for v, n in by_version}
    try:
        out["dead_lettered"] = scalar("SELECT count(*) FROM dead_letters")
    except sa.exc.ProgrammingError:
        out["dead_lettered"] = None  # a store without a dead-letter table
    out["stored_with_control_chars"] = scalar(
        r"SELECT count(*) FROM predictions WHERE text ~ '[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]'"
    )
    engine.dispose()
    return out


def main() -> None:
    ap = harness.parser(
        __doc__, "fault.json", "a sentops home with >= 2 registered versions (a copy is used; default: trains two)"
    )
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--outage-at", type=float, default=40.0)
    ap.add_argument("--outage-s", type=float, default=20.0)
    ap.add_argument("--alias-every", type=float, default=10.0)
    ap.add_argument("--bad-share", type=float, default=0.01)
    ap.add_argument("--backend", default=None, help="serve.backend (default: the setting's default)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")

    load_before = load_average()
    work = Path(tempfile.mkdtemp(prefix="sentops-fault-"))
    home = work / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTOPS_", "MLFLOW_"))}
    env.update({"SENTOPS_HOME": str(home), "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"})
    t_setup = time.monotonic()
    if args.home:
        shutil.copytree(args.home, home)
    else:
        home.mkdir()
        train_env = {**env, **QUICK_TRAIN_ENV, "SENTOPS_STORE__URL": f"sqlite:///{work / 'train-store.db'}"}
        for seed in (1, 2):
            print(f"training quick version (seed {seed}) ...", flush=True)
            sentops(train_env, "train", "--seed", str(seed))
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    versions = sorted(int(v["version"]) for v in json.loads(sentops(env, "models", "--json")))[-2:]
    if len(versions) < 2:
        sys.exit("the home needs at least two registered versions")
    sentops(env, "promote", "--version", str(versions[0]))

    cluster = start_postgres()
    server: ServeProcess | None = None
    try:
        store_url = cluster.create_database("inference")
        serve_env = {
            **env,
            "SENTOPS_STORE__URL": store_url,
            "SENTOPS_SERVE__POLL_INTERVAL_S": "1",
        }
        if args.backend:
            serve_env["SENTOPS_SERVE__BACKEND"] = args.backend
        log_path = work / "serve.log"
        server = ServeProcess(serve_env, log_path=log_path)
        url = server.base_url
        try:
            server.wait_ready(600)
        except SentopsError as e:
            sys.exit(f"{e}:\n{log_path.read_text()[-3000:]}")
        for v in versions:  # both versions loaded once (ONNX export) before the clock starts
            sentops(env, "promote", "--version", str(v))
            while httpx.get(f"{url}/model", timeout=5).json().get("version") != v:
                time.sleep(0.5)
        bodies = work / "bodies.jsonl"
        made = make_bodies(bodies, 20_000, args.bad_share, args.seed)
        # warm-up, not counted: its rows are subtracted below
        subprocess.run(
            ["wrk", "-t1", "-c2", "-d3s", "-s", str(LUA), url, "--", str(bodies)],
            capture_output=True,
            check=True,
        )
        time.sleep(2)
        warm_rows = count_rows(store_url)
        warm_2xx = served_2xx(url)
        setup_s = round(time.monotonic() - t_setup, 1)

        tl = Timeline()
        stop = threading.Event()
        ready_samples: list[dict[str, Any]] = []
        threads = [
            threading.Thread(target=pg_pause_resume, args=(cluster, args.outage_at, args.outage_s, tl, stop)),
            threading.Thread(target=alias_mover, args=(env, versions, args.alias_every, tl, stop)),
            threading.Thread(target=ready_poller, args=(url, tl, stop, ready_samples)),
        ]
        for t in threads:
            t.start()
        tl.add("load_start")
        wrk = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{args.clients}",
                f"-d{args.seconds}s",
                "--timeout",
                "10s",
                "--latency",
                "-s",
                str(LUA),
                url,
                "--",
                str(bodies),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        tl.add("load_end")
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join(120)
        match = re.search(r"^LOAD_RESULT (.*)$", wrk.stdout, re.M)
        if wrk.returncode != 0 or match is None:
            sys.exit(f"wrk failed ({wrk.returncode}): {wrk.stdout[-2000:]} {wrk.stderr[-2000:]}")
        load = json.loads(match.group(1))
        metrics_text = httpx.get(f"{url}/metrics", timeout=10).text
        server_2xx = served_2xx(url) - warm_2xx
        serve_exit = server.stop(180)  # SIGTERM, graceful: the writer drains before exit
        server = None
        rows = count_rows(store_url)
    finally:
        if server is not None:
            server.stop(0, signal.SIGKILL)
        cluster.stop()

    statuses = {int(k): v for k, v in load["statuses"].items()}
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    s5xx = sum(v for k, v in statuses.items() if k >= 500 and k != 503)
    s503 = statuses.get(503, 0)
    stored = rows["stored"] - warm_rows["stored"]
    dead = (rows["dead_lettered"] or 0) - (warm_rows["dead_lettered"] or 0)
    events = tl.events
    t_stop = next((e["t"] for e in events if e["event"] == "postgres_stop"), None)
    t_start = next((e["t"] for e in events if e["event"] == "postgres_started"), None)
    ready_503 = [s["t"] for s in ready_samples if s["status"] == 503]
    queued = [int(m.group(1)) for s in ready_samples if (m := re.search(r"(\d+) predictions queued", s["detail"]))]
    ready_503_outside = [t for t in ready_503 if t_stop is None or t_start is None or not (t_stop <= t <= t_start + 15)]
    result: dict[str, Any] = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "setup_seconds": setup_s,
        "versions": versions,
        **made,
        "answers": {str(k): v for k, v in sorted(statuses.items())},
        "answers_2xx": ok,
        # wrk stops at its deadline with one request in flight per connection: the server
        # answered those (and stored them) but wrk never read the answer
        "answers_2xx_counted_by_server": server_2xx,
        "answers_503": s503,
        "answers_5xx_other": s5xx,
        "socket_errors": load["socket_errors"],
        "latency_ms": load["latency_ms"],
        "requests_per_s": round(load["requests"] / (load["duration_us"] / 1e6), 1),
        "stored_rows": stored,
        "dead_lettered_rows": dead,
        "stored_with_control_chars": rows["stored_with_control_chars"],
        "stored_by_version": rows["stored_by_version"],
        "ready_503_samples": len(ready_503),
        "ready_503_seconds": round(len(ready_503) * 0.5, 1),
        "max_queued_rows_seen": max(queued, default=0),
        "ready_503_outside_outage": len(ready_503_outside),
        "serve_exit_code": serve_exit,
        "timeline": events,
        "metrics_after": [
            line for line in metrics_text.splitlines() if line.startswith("sentops_store") and not line.startswith("#")
        ],
    }
    result["target_met"] = bool(
        stored + dead == server_2xx
        and ok <= server_2xx <= ok + args.clients
        and s5xx == 0
        and not ready_503_outside
        and load["socket_errors"]["timeout"] == 0
    )
    write_result(args.out, result, load_before)
    print(json.dumps({k: v for k, v in result.items() if k not in ("timeline", "metrics_after")}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
