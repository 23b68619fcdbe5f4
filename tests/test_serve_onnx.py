"""The ONNX Runtime int8 backend: exported once per version, cached, and serving the same
answers (label, probability, embedding) as torch within quantisation error."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from serve_support import Server, promote, serve_settings, start_server, wait_for

from sentiment_ops.config import load_settings
from sentiment_ops.inference.onnx import ONNX_FILE, OnnxPredictor
from sentiment_ops.serving.batcher import ThreadChooser
from sentiment_ops.tracking.artifacts import logged_predictor
from sentiment_ops.tracking.client import global_tracking_uri
from sentiment_ops.tracking.pyfunc import load_pyfunc
from sentiment_ops.tracking.registry import Registry

TEXTS = [
    "A moving, beautifully acted film.",
    "Dull and far too long.",
    "The plot makes no sense but the music is wonderful. " * 10,
    "ok",
]


def test_onnx_backend_serves_the_logged_graph(home_with_model: dict[str, Any], running: list[Server]) -> None:
    promote(1)
    srv = start_server(serve_settings(backend="onnx"))
    running.append(srv)
    with srv.client() as c:
        info = c.get("/model").json()
        assert info["backend"] == "onnx" and info["version"] == 1
        r = c.post("/predict/batch", json={"texts": TEXTS})
        assert r.status_code == 200, r.text
        onnx_preds = r.json()["predictions"]
        assert 'backend="onnx"' in c.get("/metrics").text
    srv.stop()
    # the graph logged with the version was served: nothing exported, nothing cached
    assert not list((load_settings().home / "serving-cache").glob(f"*/{ONNX_FILE}"))

    srv2 = start_server(serve_settings(backend="torch"))
    running.append(srv2)
    with srv2.client() as c:
        torch_preds = c.post("/predict/batch", json={"texts": TEXTS}).json()["predictions"]
    srv2.stop()
    for o, t in zip(onnx_preds, torch_preds, strict=True):
        assert abs(o["probability"] - t["probability"]) < 0.02


class Hostile(mlflow.pyfunc.PythonModel):
    """A version's own code, as whoever can register a version could log it: loading it
    (``load_context``) leaves a marker file, predicting raises."""

    _skip_type_hint_validation = True

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def load_context(self, context: Any) -> None:
        Path(self.marker).write_text("the version's code ran in the server")

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # no hints: MLflow reads them
        raise RuntimeError("the version's code ran in the server")


def _register_hostile(marker: Path) -> int:
    """A version logged without the int8 graph (a pickled PythonModel of its own)."""
    registry = Registry(load_settings())
    with global_tracking_uri(registry.tracking_uri), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's notes about pickles and type hints
        with mlflow.start_run(experiment_id=registry.experiment_id()) as run:
            mlflow.pyfunc.log_model(name="model", python_model=Hostile(str(marker)), pip_requirements=[])
    return registry.register(run.info.run_id).version


def test_a_version_without_its_graph_is_refused_and_its_code_never_runs(
    home_with_model: dict[str, Any], running: list[Server], tmp_path: Path
) -> None:
    """With the onnx backend the server loads the logged graph and tokenizer only: a version
    without them is refused (the old one keeps serving, /model says why), its code never runs."""
    marker = tmp_path / "ran.txt"
    promote(1)
    srv = start_server(serve_settings(backend="onnx"))
    running.append(srv)
    hostile = _register_hostile(marker)
    with srv.client() as c:
        promote(hostile)
        info = wait_for(lambda: (i := c.get("/model").json())["last_reload_error"] and i, timeout=30)
        assert not marker.exists(), marker.read_text()
        assert info["version"] == 1 and info["ready"] is True
        error = info["last_reload_error"]
        assert error["version"] == hostile
        assert "without its ONNX int8 graph" in error["error"] and "never runs a version's own code" in error["error"]
        r = c.post("/predict", json={"text": "still the old model?"})
        assert r.status_code == 200 and r.json()["model"]["version"] == 1
    srv.stop()
    assert not list((load_settings().home / "serving-cache").glob("*"))  # nothing exported either

    # at start-up with only that version behind the alias: not ready, with the reason
    srv2 = start_server(serve_settings(backend="onnx"))
    running.append(srv2)
    with srv2.client() as c:
        ready = c.get("/ready")
        assert ready.status_code == 503 and "without its ONNX int8 graph" in ready.json()["detail"]
        assert c.post("/predict", json={"text": "anyone?"}).status_code == 503
    assert not marker.exists()


def test_the_logged_graph_answers_as_the_export_at_load(
    home_with_model: dict[str, Any], tmp_path: Any, plain_mlflow: str
) -> None:
    """Logged at training (tokenizers-only encoder) or exported by the server from the
    logged weights (transformers tokenizer): the same ids, the same logits and embeddings."""
    uri = "models:/sentiment-classifier/1"
    model = load_pyfunc(uri).model
    assert model is not None
    exported = OnnxPredictor.from_model(model, tmp_path / "cache", threads=1)
    logged = logged_predictor(uri, threads=1)
    assert logged is not None
    texts = [*TEXTS, "<br />Überraschend gut!<br /><br />", "word " * 400, "", "émoji 🎬 ok"]
    ids = logged.encode(texts)
    assert ids == exported.encode(texts) == model.encode(texts)
    assert logged.pad_id == exported.pad_id
    for a, b in zip(logged.forward_ids(ids), exported.forward_ids(ids), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_onnx_gives_logits_and_embedding_in_one_pass(
    home_with_model: dict[str, Any], tmp_path: Any, plain_mlflow: str
) -> None:
    model = load_pyfunc("models:/sentiment-classifier/1").model
    assert model is not None
    onnx = OnnxPredictor.from_model(model, tmp_path / "cache", threads=1)
    ids = model.encode(TEXTS)
    lt, et = model.forward_ids(ids)
    lo, eo = onnx.forward_ids(ids)
    assert lo.shape == lt.shape == (4, 2) and eo.shape == et.shape == (4, 32)
    np.testing.assert_allclose(lo, lt, atol=0.05)
    cos = np.sum(et * eo, 1) / np.linalg.norm(et, axis=1) / np.linalg.norm(eo, axis=1)
    assert cos.min() > 0.95
    # padding barely changes a text's answer: pooling and attention honour the mask; what
    # is left is dynamic int8 quantisation, whose activation scale spans the whole batch
    alone, alone_emb = onnx.forward_ids([ids[3]])
    np.testing.assert_allclose(alone[0], lo[3], atol=5e-3)
    np.testing.assert_allclose(alone_emb[0], eo[3], atol=5e-2)


# Packages the serving image (Dockerfile target `serve`) leaves out.
NOT_IN_SERVE_IMAGE = (
    *("torch", "functorch", "torchgen", "transformers", "accelerate", "sentence_transformers", "onnx"),
    *("sklearn", "scikit_learn", "scipy", "matplotlib", "pyarrow", "datasets"),
)

SERVE_WITHOUT_TORCH = """
import sys, site
site.addsitedir(sys.argv[1])
sys.path.insert(0, sys.argv[2])
from fastapi.testclient import TestClient
from sentiment_ops.cli.main import app as cli  # the whole CLI imports without torch
from sentiment_ops.config import load_settings
from sentiment_ops.serving import create_app

settings = load_settings(overrides={"serve.backend": "onnx"})
with TestClient(create_app(settings)) as client:
    model = client.get("/model").json()
    answer = client.post("/predict", json={"text": "A moving, beautifully acted film."})
print(model["backend"], model["version"], answer.status_code, answer.json()["label"] in ("positive", "negative"))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {names})
print("loaded:", loaded)
"""


def test_onnx_serving_needs_no_torch(home_with_model: dict[str, Any], tmp_path: Any) -> None:
    """The serving image has no torch and no transformers: a Python that cannot find them
    (a site folder holding every installed package but those) serves a logged version."""
    import os
    import site
    import subprocess
    import sys
    from pathlib import Path

    promote(1)
    source = Path(site.getsitepackages()[0])
    fake = tmp_path / "site-packages"
    fake.mkdir()
    for entry in source.iterdir():
        top = entry.name.split("-")[0].split(".")[0].lower()
        if top in NOT_IN_SERVE_IMAGE or entry.name.startswith(("__editable__", "sentiment_ops")):
            continue
        (fake / entry.name).symlink_to(entry)
    root = Path(__file__).resolve().parents[1]
    script = SERVE_WITHOUT_TORCH.replace("{names}", repr(set(NOT_IN_SERVE_IMAGE)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, str(fake), str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == "onnx 1 200 True", result.stdout + result.stderr[-2000:]
    assert lines[-1] == "loaded: []"


def test_the_many_thread_session_answers_as_the_one_thread_one(
    home_with_model: dict[str, Any], plain_mlflow: str
) -> None:
    """``solo``: the same graph on every core, for a pass that runs alone: same answers."""
    uri = "models:/sentiment-classifier/1"
    one = logged_predictor(uri, threads=1)
    both = logged_predictor(uri, threads=1, solo_threads=2)
    assert one is not None and both is not None
    assert one.solo is one  # no second session unless asked for more threads
    assert both.solo is not both and both.solo.threads == 2
    # neither session keeps a CPU memory arena (with it, two threads of changing batch
    # shapes slowed the server for minutes at a time; docs/serving.md)
    for predictor in (one, both, both.solo):
        assert predictor.session.get_session_options().enable_cpu_mem_arena is False
    # only the many-thread session spins (a lone pass: its threads do not sleep between
    # operators), and it stops spinning when the pass returns
    spinning = "session.intra_op.allow_spinning"
    assert one.session.get_session_options().get_session_config_entry(spinning) == "0"
    solo_options = both.solo.session.get_session_options()
    assert solo_options.get_session_config_entry(spinning) == "1"
    assert solo_options.get_session_config_entry("session.force_spinning_stop") == "1"
    ids = both.encode([*TEXTS, "word " * 400])
    for a, b in zip(both.forward_ids(ids), both.solo.forward_ids(ids), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_a_lone_request_tries_both_thread_layouts_with_the_same_answer(
    home_with_model: dict[str, Any], running: list[Server]
) -> None:
    promote(1)
    srv = start_server(serve_settings(backend="onnx", torch_threads=2, inference_workers=2))
    running.append(srv)
    text = TEXTS[2]
    answers = set()
    with srv.client() as c:
        for _ in range(10):  # one at a time: each batch runs alone
            r = c.post("/predict", json={"text": text})
            assert r.status_code == 200, r.text
            answers.add((r.json()["label"], round(r.json()["probability"], 4)))
    predictor = srv.state.holder.current.predictor
    assert predictor.threads == 1 and predictor.solo.threads == 2
    tokens = len(predictor.encode([text])[0])
    solo_n, one_n = srv.state.batcher.chooser.samples(tokens)
    assert solo_n >= 3 and one_n >= 3  # measured both ways before settling
    assert len(answers) == 1
    # /metrics counts the batches of each layout (an operator sees whether lone passes take every core)
    registry = srv.state.metrics.registry
    many = registry.get_sample_value("sentops_batch_threads_total", {"threads": "many"})
    one = registry.get_sample_value("sentops_batch_threads_total", {"threads": "one"})
    assert many is not None and one is not None and many >= 3 and one >= 3 and many + one == 10


def test_the_thread_chooser_takes_the_cheaper_layout_and_keeps_checking() -> None:
    now = [0.0]
    chooser = ThreadChooser(explore_every_s=10.0, min_samples=2, clock=lambda: now[0])

    def turns(n: int, seconds_each: float, solo_s: float, one_s: float) -> str:
        picks = ""
        for _ in range(n):
            now[0] += seconds_each
            solo = chooser.pick(200)
            chooser.record(200, solo, solo_s if solo else one_s)
            picks += "T" if solo else "F"
        return picks

    # each layout measured in a run of its own; the first pass of each run is not kept
    assert turns(6, 0.04, 0.010, 0.030) == "TTTFFF"  # many threads 3x faster here
    assert chooser.samples(200) == (2, 2)
    # then the cheaper one, and the other one once every 10 s, in a pair (40 ms a pass)
    picks = turns(600, 0.04, 0.010, 0.030)
    explored = [i for i, p in enumerate(picks) if p == "F"]
    assert len(explored) == 4 and explored[1] == explored[0] + 1 and explored[3] == explored[2] + 1
    # 10 s (250 turns) after the one-thread run, then 10 s after the pair
    assert 249 <= explored[0] <= 251 and 249 <= explored[2] - explored[1] <= 251
    # the cores got busy: the chosen layout is measured at every pass, so it switches at once
    picks = turns(20, 0.04, 0.090, 0.030)
    assert picks.endswith("F" * 10)
    assert chooser.samples(20) == (0, 0)  # short batches are measured on their own


def test_the_first_pass_after_a_switch_of_layout_is_not_measured() -> None:
    """Waking the many-thread session's sleeping threads is paid by the first pass on it:
    kept, it made a 1.6x faster layout look no faster."""
    chooser = ThreadChooser(min_samples=2)
    chooser.ran(False)  # batches under load: one thread, not chosen here
    chooser.record(200, True, 0.500)  # the first lone pass on many threads: not kept
    assert chooser.samples(200) == (0, 0)
    chooser.record(200, True, 0.010)
    chooser.record(200, False, 0.030)  # a switch again: not kept
    chooser.record(200, False, 0.030)
    assert chooser.samples(200) == (1, 1)
