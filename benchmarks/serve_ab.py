"""A/B serving benchmark: `sentops serve` of this tree against an earlier commit, same run.

    flock /tmp/sentops-bench.lock python benchmarks/serve_ab.py --home HOME --before 4d4a506

HOME holds a registered version behind ``production`` (a copy per side is used, so HOME is
not modified). The earlier commit is checked out in a temporary ``git worktree`` and runs
from there (``PYTHONPATH``) with this machine's packages. For each round, both servers take
the same load in alternating order (A B, then B A): `wrk` (C, one thread, ``-c`` keep-alive
connections) posts ``/predict`` bodies for ``--seconds`` per cell: short texts (Rotten
Tomatoes test split) and long ones (IMDB golden reviews, truncated by the model as trained).
The answer per cell is the ratio after / before of requests per second and of p99 latency,
measured minutes apart on the same cores, which is what a refactor must leave unchanged.

``--interleave``: both servers run from the start (the idle one only polls its alias) and
every cell runs on one and at once on the other, alternating which goes first by round, so
the two halves of a pair are seconds apart. Use it on a shared host whose speed drifts from
minute to minute (seen on a 2-core share of an AMD EPYC: whole servers' lifetimes at 0.75x of
the others); ``paired_rps_ratio`` is the median of the rounds' own ratios.

``--before .`` runs this tree on both sides, to compare settings: ``--env-before`` and
``--env-after`` (``SENTOPS_SERVE__ADAPTIVE_THREADS=false``, repeatable) set each side's.

Writes benchmarks/results/serve_ab.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import harness
from harness import ROOT, ServeProcess, load_average, write_result
from machine import wait_idle

LUA = Path(__file__).parent / "serve_load.lua"  # POST /predict bodies, counts statuses, prints LOAD_RESULT
PY = sys.executable


def bodies(path: Path, kind: str, n: int = 2000) -> Path:
    from sentiment_ops.data import golden_test, load_corpus

    texts = load_corpus("rotten_tomatoes").test.texts if kind == "short" else golden_test(n).texts
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:n]))
    return path


class Server(ServeProcess):
    """``sentops serve`` from ``tree`` on a free loopback port (harness: stopped by its PID)."""

    def __init__(self, tree: Path, home: Path, log: Path, settings: dict[str, str] | None = None) -> None:
        self.home = home
        env = dict(os.environ, SENTOPS_HOME=str(home), PYTHONPATH=str(tree))
        for key in ("SENTOPS_CONFIG", "MLFLOW_TRACKING_URI", "SENTOPS_PREDICT_TOKEN"):
            env.pop(key, None)
        env.update(settings or {})
        super().__init__(env, log_path=log, cwd=tree)
        self.url = self.base_url

    def wait_ready(self, timeout_s: float = 300, path: str = "/ready") -> None:
        super().wait_ready(timeout_s, path)

    def stop(self, timeout_s: float = 120, sig: int = signal.SIGTERM) -> int | None:
        return super().stop(timeout_s, sig)


def env_pairs(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` arguments (``SENTOPS_SERVE__ADAPTIVE_THREADS=false``) as a dict."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("SENTOPS_"):
            sys.exit(f"not a SENTOPS_KEY=VALUE setting: {pair!r}")
        out[key] = value
    return out


def wrk(url: str, body_file: Path, clients: int, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{clients}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
            "--",
            str(body_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"^LOAD_RESULT (.*)$", out.stdout, re.M)
    if out.returncode != 0 or match is None:
        sys.exit(f"wrk failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
    res = json.loads(match.group(1))
    ok = sum(v for k, v in res["statuses"].items() if k.startswith("2"))
    return {
        "rps": ok / (res["duration_us"] / 1e6),
        "ok": ok,
        "non_2xx": res["requests"] - ok,
        "socket_errors": res["socket_errors"],
        **{f"{k}_ms": v for k, v in res["latency_ms"].items()},
    }


def main() -> None:
    ap = harness.parser(__doc__, "serve_ab.json", "sentops home with a version behind production (copied)")
    ap.add_argument("--before", default="4d4a506", help="the earlier commit (git ref), or . for this tree")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", default="8,32")
    ap.add_argument(
        "--interleave",
        action="store_true",
        help="run both servers at once and alternate them cell by cell (pairs seconds apart, "
        "for a host whose speed drifts from minute to minute)",
    )
    ap.add_argument("--env-before", action="append", default=[], metavar="KEY=VALUE", help="setting of the before side")
    ap.add_argument("--env-after", action="append", default=[], metavar="KEY=VALUE", help="setting of the after side")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    clients = [int(c) for c in args.clients.split(",")]
    load_before = load_average()
    work = Path(tempfile.mkdtemp(prefix="sentops-ab-"))
    before_tree = work / "before"
    if args.before == ".":  # the same tree on both sides: settings A/B (--env-before / --env-after)
        before_tree = ROOT
    else:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(before_tree), args.before], check=True
        )
    side_env = {"before": env_pairs(args.env_before), "after": env_pairs(args.env_after)}
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    trees = {"before": before_tree, "after": ROOT}
    files = {kind: bodies(work / f"{kind}.jsonl", kind) for kind in ("short", "long")}
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def measure(rnd: int, side: str, server: Server, kind: str, c: int) -> None:
        res = wrk(server.url, files[kind], c, args.seconds)
        wait_idle()  # not beside this server's drain: a 1-s stall in the next cell's p99
        cells.setdefault(f"{kind} c{c}", {}).setdefault(side, []).append(res)
        print(f"round {rnd} {side:6} {kind:5} c{c:<3} {res['rps']:7.1f} req/s p99 {res['p99_ms']:.1f} ms")

    def start(side: str, name: str) -> Server:
        home = work / f"home-{side}-{name}"
        shutil.copytree(args.home, home)
        server = Server(trees[side], home, work / f"{side}.log", side_env[side])
        try:
            server.wait_ready()
            wrk(server.url, files["short"], 2, 3)  # warm-up
        except BaseException:  # sys.exit included: stop the server we started
            finish(server)
            raise
        return server

    def finish(server: Server) -> None:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)  # its copy of HOME (the log stays in work/)

    try:
        if args.interleave:  # both servers up; each cell on one, then at once on the other
            servers: dict[str, Server] = {}
            try:
                for side in ("before", "after"):
                    servers[side] = start(side, "all")
                for rnd in range(args.rounds):
                    for kind in ("short", "long"):
                        for c in clients:
                            order = ["before", "after"] if rnd % 2 == 0 else ["after", "before"]
                            for side in order:
                                measure(rnd, side, servers[side], kind, c)
            finally:
                for server in servers.values():
                    finish(server)
        else:
            for rnd in range(args.rounds):
                order = ["before", "after"] if rnd % 2 == 0 else ["after", "before"]
                for side in order:
                    server = start(side, str(rnd))
                    try:
                        for kind in ("short", "long"):
                            for c in clients:
                                measure(rnd, side, server, kind, c)
                    finally:
                        finish(server)
    finally:
        if before_tree != ROOT:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before_tree)], check=False)
    summary = {}
    for cell, sides in cells.items():
        b_rps = statistics.median(r["rps"] for r in sides["before"])
        a_rps = statistics.median(r["rps"] for r in sides["after"])
        b_p99 = statistics.median(r["p99_ms"] for r in sides["before"])
        a_p99 = statistics.median(r["p99_ms"] for r in sides["after"])
        b_p50 = statistics.median(r["p50_ms"] for r in sides["before"])
        a_p50 = statistics.median(r["p50_ms"] for r in sides["after"])
        summary[cell] = {
            "before_rps": round(b_rps, 1),
            "after_rps": round(a_rps, 1),
            "rps_ratio": round(a_rps / b_rps, 3),
            # the median of the rounds' own ratios: each pair measured minutes (or, with
            # --interleave, seconds) apart, so a slow spell of the host falls on both sides
            "paired_rps_ratio": round(
                statistics.median(a["rps"] / b["rps"] for a, b in zip(sides["after"], sides["before"], strict=True)),
                3,
            ),
            "before_p99_ms": round(b_p99, 1),
            "after_p99_ms": round(a_p99, 1),
            "p99_ratio": round(a_p99 / b_p99, 3),
            "before_p50_ms": round(b_p50, 1),
            "after_p50_ms": round(a_p50, 1),
            "before_p99_over_p50": round(b_p99 / b_p50, 2),
            "after_p99_over_p50": round(a_p99 / a_p50, 2),
            "non_2xx": sum(r["non_2xx"] for s in sides.values() for r in s),
        }
    result = {
        "before": args.before,
        "env_before": side_env["before"],
        "env_after": side_env["after"],
        "after": commit.stdout.strip(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "interleaved": args.interleave,
        "summary": summary,
        "runs": cells,
    }
    write_result(args.out, result, load_before)
    for cell, s in summary.items():
        print(
            f"{cell:10} before {s['before_rps']:7.1f} after {s['after_rps']:7.1f} req/s ({s['rps_ratio']:.3f}x, "
            f"paired {s['paired_rps_ratio']:.3f}x); "
            f"p99 {s['before_p99_ms']:.0f} → {s['after_p99_ms']:.0f} ms ({s['p99_ratio']:.3f}x); "
            f"p99/p50 {s['before_p99_over_p50']:.2f} → {s['after_p99_over_p50']:.2f}"
        )


if __name__ == "__main__":
    main()
