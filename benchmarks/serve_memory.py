"""The serving worst case for memory: N clients each send the largest valid /predict/batch
body at once, in rounds; the server's peak resident memory must stay under the pod's limit
(deploy/k8s/api-deployment.yaml: 2 GiB), every answer must be 2xx or 503, and the server
must still answer afterwards.

    python benchmarks/serve_memory.py --home /tmp/mem-home [--clients 32] [--rounds 3]

HOME holds a trained model promoted to ``production`` (any ``sentops train`` on the
bundled MiniLM; the tiny test model is not representative of memory). It is copied, never
written. ``sentops serve --backend onnx`` runs as a child process on a free 127.0.0.1 port
with the settings of the environment (``SENTOPS_SERVE__*``) and ``--set KEY=VALUE``; its
peak resident memory is the kernel's high-water mark (``VmHWM`` of /proc/PID/status), its
memory at rest ``VmRSS`` once ready. The body: ``serve.max_batch_items`` texts of
``serve.max_text_chars`` characters each; ``--text escaped`` (the default) writes each
character outside the Basic Multilingual Plane as two ``\\uXXXX`` escapes, the largest
body the server accepts (12 bytes a character); ``utf8`` sends the same characters raw,
``spaced`` escaped with a space after each (a word a character: the most tokens),
``ascii`` plain words. Everything is bounded in time (``--deadline``); the server is
stopped at the end. Writes benchmarks/results/serve_memory.json and prints it.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import harness
from harness import ROOT, ServeProcess, load_average, write_result

from sentiment_ops.config import load_settings

LIMIT_BYTES = 2 * 1024**3  # the API pod's memory limit
SHOWN = ("max_batch_items", "max_text_chars", "max_concurrent_requests", "max_inflight_mb", "store_queue_max_mb")


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def largest_body(kind: str, items: int, chars: int) -> bytes:
    """The /predict/batch body of ``items`` texts of ``chars`` characters each."""
    if kind == "ascii":
        text = ("great film " * (chars // 11 + 1))[:chars]
        return json.dumps({"texts": [text] * items}).encode()
    emoji = "\U0001f600"  # one character: 4 bytes of UTF-8, two \\uXXXX escapes (12 bytes) of JSON
    if kind == "spaced":  # one word a character: ~chars / 2 tokens to encode
        text = (emoji + " ") * (chars // 2) + emoji * (chars % 2)
        return json.dumps({"texts": [text] * items}).encode()
    return json.dumps({"texts": [emoji * chars] * items}, ensure_ascii=(kind == "escaped")).encode()


def post(port: int, body: bytes, timeout: float) -> tuple[int | None, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict/batch", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, "" if response.status < 300 else data[:200].decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def one_round(port: int, body: bytes, clients: int, timeout: float) -> list[tuple[int | None, str]]:
    """``clients`` threads post ``body`` at the same moment; their answers."""
    barrier = threading.Barrier(clients)
    out: list[tuple[int | None, str]] = [(None, "not run")] * clients

    def run(i: int) -> None:
        barrier.wait()
        out[i] = post(port, body, timeout)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    return out


def main() -> None:
    ap = harness.parser(__doc__, "serve_memory.json", "a home with a model behind production")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--text", choices=("escaped", "spaced", "utf8", "ascii"), default="escaped")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. max_inflight_mb=64")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a client waits for its answer")
    ap.add_argument("--deadline", type=float, default=900.0, help="seconds for the whole run")
    args = ap.parse_args()
    end = time.monotonic() + args.deadline
    load_before = load_average()

    tmp = Path(tempfile.mkdtemp(prefix="sentops-mem-"))
    home = tmp / "home"
    shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("inference.db*", "serving-cache"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTOPS_HOME", "MLFLOW_TRACKING"))}
    env.update(SENTOPS_HOME=str(home), PYTHONPATH=str(ROOT), SENTOPS_LOG_LEVEL="WARNING")
    for item in args.set:
        key, _, value = item.partition("=")
        env[f"SENTOPS_SERVE__{key.upper()}"] = value
    serve = load_settings(environ=env).serve
    body = largest_body(args.text, serve.max_batch_items, serve.max_text_chars)
    server = ServeProcess(env, ["--backend", "onnx"], log_path=tmp / "serve.log", cwd=tmp)
    port, proc = server.port, server.proc
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    t0 = time.monotonic()
    try:
        server.wait_ready(max(1.0, min(end - time.monotonic(), 300)))
        rest_kib = proc_kib(proc.pid, "VmRSS")
        for _ in range(args.rounds):
            timeout = max(5.0, min(args.timeout, end - time.monotonic()))
            for status, error in one_round(port, body, args.clients, timeout):
                statuses[str(status)] += 1
                if status is None or not (200 <= status < 300 or status == 503):
                    errors.append(f"{status}: {error}")
            if time.monotonic() > end:
                break
        alive = proc.poll() is None
        after, _ = post(port, json.dumps({"texts": ["still there?"]}).encode(), 30) if alive else (None, "")
        peak_kib = proc_kib(proc.pid, "VmHWM") if alive else None
    finally:
        server.stop(60, signal.SIGINT)
    result: dict[str, Any] = {
        "clients": args.clients,
        "rounds": args.rounds,
        "text": args.text,
        "body_bytes": len(body),
        "settings": {k: getattr(serve, k) for k in SHOWN if hasattr(serve, k)},
        "rest_rss_mib": round(rest_kib / 1024, 1),
        "peak_rss_mib": None if peak_kib is None else round(peak_kib / 1024, 1),
        "under_2gib": peak_kib is not None and peak_kib * 1024 < LIMIT_BYTES,
        "statuses": dict(statuses),
        "errors": errors[:10],
        "alive_after": alive,
        "answer_after": after,
        "seconds": round(time.monotonic() - t0, 1),
        "exit_code": proc.returncode,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(write_result(args.out, result, load_before), indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
