"""A logged version loads and serves through MLflow alone, where sentiment_ops is not
installed: a fresh virtualenv with exactly the model's pinned requirements (built once per
requirement set, kept under ``~/.cache/sentops-test-venvs``) runs
``mlflow.pyfunc.load_model("models:/…")`` and ``mlflow models serve --env-manager local``
against this test's registry, and both agree with ``sentops serve`` on the same texts."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from serve_support import Server, free_port, promote, serve_settings, start_server

from sentiment_ops.config import load_settings
from sentiment_ops.tracking.pyfunc import pip_requirements

pytestmark = pytest.mark.integration

MODEL_URI = "models:/sentiment-classifier/1"
# raw texts as clients send them: the model's own normaliser must strip the markup
TEXTS = [
    "A moving, beautifully acted film.<br /><br />I loved every minute.",
    "Dull and far too long.<br/>The plot<BR>goes nowhere.",
    "meh",
    "An instant classic: the cast, the score, the ending. " * 12,
]

PREDICT = """
import importlib.util, json, sys
assert importlib.util.find_spec("sentiment_ops") is None, "sentiment_ops is installed here"
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.DataFrame({"text": json.loads(sys.argv[2])}))
import sentiment_ops
print(json.dumps({"label": out["label"].tolist(), "probability": out["probability"].tolist(),
                  "label_name": out["label_name"].tolist(), "package": sentiment_ops.__file__}))
"""


def _venv_env(tracking_uri: str) -> dict[str, str]:
    """This environment minus what would make our checkout importable or pick our venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


@pytest.fixture(scope="session")
def standalone_venv() -> Path:
    """A virtualenv holding the model's requirements and nothing of sentops, built once per
    requirement set and Python version (a first build takes minutes: it installs torch)."""
    reqs = pip_requirements()
    key = hashlib.sha256("\n".join([sys.version.split()[0], *reqs]).encode()).hexdigest()[:16]
    root = Path(os.environ.get("SENTOPS_TEST_VENVS", Path.home() / ".cache" / "sentops-test-venvs"))
    root.mkdir(parents=True, exist_ok=True)
    venv = root / key
    with (root / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and reuse it
        if not (venv / "complete").exists():
            shutil.rmtree(venv, ignore_errors=True)  # a build that was cut short
            env = _venv_env("")
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=300)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            done = subprocess.run(
                [*pip, *reqs], check=False, env=env, capture_output=True, text=True, timeout=1800, cwd=venv
            )
            assert done.returncode == 0, done.stderr[-4000:]
            (venv / "complete").write_text(f"{' '.join(reqs)}\nbuilt in {time.monotonic() - started:.0f} s\n")
    return venv


def _served(texts: list[str]) -> dict[str, Any]:
    """What ``sentops serve`` (the torch backend, as the server runs it) answers."""
    promote(1)
    server: Server = start_server(serve_settings())
    try:
        with server.client() as c:
            r = c.post("/predict/batch", json={"texts": texts})
        assert r.status_code == 200, r.text
    finally:
        server.stop()
    preds = r.json()["predictions"]
    return {"label": [p["prediction"] for p in preds], "probability": [p["probability"] for p in preds]}


def _invocations(venv: Path, env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    """``mlflow models serve --env-manager local`` from the fresh venv: its /invocations
    answer for TEXTS. The server (and its workers, in the session it leads) stops by PID."""
    port = free_port()
    log_file = cwd / "mlflow-serve.log"
    env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}  # as activated: it runs `uvicorn`
    cmd = [str(venv / "bin" / "mlflow"), "models", "serve", "-m", MODEL_URI, "--env-manager", "local"]
    with log_file.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, f"mlflow models serve exited: {log_file.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no /ping answer: {log_file.read_text()[-4000:]}"
            try:
                if httpx.get(f"{url}/ping", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        payload = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}
        r = httpx.post(f"{url}/invocations", json=payload, timeout=120)
        assert r.status_code == 200, r.text
        return list(r.json()["predictions"])
    finally:
        # the session our Popen leads: the CLI and the uvicorn it runs
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_version_loads_and_serves_without_sentops(
    home_with_model: dict[str, Any], standalone_venv: Path, tmp_path: Path
) -> None:
    env = _venv_env(load_settings().tracking_uri)
    outside = tmp_path / "outside"  # a cwd from which our checkout is not importable
    outside.mkdir()
    python = str(standalone_venv / "bin" / "python")
    script = outside / "predict.py"
    script.write_text(PREDICT)
    done = subprocess.run(
        [python, str(script), MODEL_URI, json.dumps(TEXTS)],
        check=False,
        env=env,
        cwd=outside,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    # the code MLflow logged with the version, not an installed sentiment_ops
    assert "/code/sentiment_ops/" in fresh["package"], fresh["package"]

    served = _served(TEXTS)
    assert fresh["label"] == served["label"]
    np.testing.assert_allclose(fresh["probability"], served["probability"], rtol=1e-5, atol=1e-6)
    assert fresh["label_name"] == [["negative", "positive"][i] for i in fresh["label"]]

    answered = _invocations(standalone_venv, env, outside)
    assert [p["label"] for p in answered] == served["label"]
    np.testing.assert_allclose([p["probability"] for p in answered], served["probability"], rtol=1e-5, atol=1e-6)
