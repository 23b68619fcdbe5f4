"""The one inference layer (``sentiment_ops.inference``): the torch model and the ONNX graph
share padding, pooling and the grouped passes; the layer imports without torch; and no
module outside the HTTP service and the CLI imports ``sentiment_ops.serving``."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from onnx import load as onnx_graph
from serve_support import assert_imports_without_torch

import sentiment_ops
from sentiment_ops.inference import PAD_SPLIT_FACTOR, forward_grouped, pad, split_by_length

TEXTS = [
    "ok",
    "A moving, beautifully acted film.",
    "The plot makes no sense but the music is wonderful. " * 6,
    "Dull and far too long.",
]


def test_torch_and_onnx_share_padding_and_pooling(tiny_model_dir: Path, tmp_path: Path) -> None:
    """One padded pass over texts of very different lengths: the fp32 graph (exported from
    the module ``SentimentModel.forward_ids`` runs, fed by the same ``pad``) gives the same
    logits and mean-pooled embeddings as torch. Pooling or padding written twice and
    changed once fails here."""
    from sentiment_ops.inference.onnx import OnnxPredictor, export_fp32
    from sentiment_ops.modeling import SentimentModel

    model = SentimentModel.from_dir(tiny_model_dir, max_length=64)
    ids = model.encode(TEXTS)
    assert len({len(x) for x in ids}) == len(ids)  # every row of the pass padded differently
    before = model.model.config._attn_implementation
    graph = export_fp32(model, tmp_path / "model.fp32.onnx")
    onnx = OnnxPredictor(model, graph, threads=1)
    # traced with the eager attention, on a copy: no per-layer NaN guard of the SDPA trace
    # (IsNaN + Where over heads x queries x keys), and the caller's model is left as it was
    assert "IsNaN" not in {node.op_type for node in onnx_graph(graph).graph.node}
    assert model.model.config._attn_implementation == before
    torch_logits, torch_emb = model.forward_ids(ids)
    onnx_logits, onnx_emb = onnx.forward_ids(ids)
    np.testing.assert_allclose(onnx_logits, torch_logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(onnx_emb, torch_emb, rtol=0, atol=1e-5)
    # and padding does not change a text's answer (mask-aware attention and pooling)
    alone_logits, alone_emb = onnx.forward_ids([ids[0]])
    np.testing.assert_allclose(alone_logits[0], torch_logits[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(alone_emb[0], torch_emb[0], rtol=0, atol=1e-5)


def test_predict_is_the_grouped_passes(tiny_model_dir: Path) -> None:
    """``SentimentModel.predict`` (batch scoring) and the server's grouping give the same
    answers, in input order."""
    from sentiment_ops.modeling import SentimentModel

    model = SentimentModel.from_dir(tiny_model_dir, max_length=64)
    scored = model.predict(TEXTS, batch_size=2)
    served = forward_grouped(model, model.encode(TEXTS), max_tokens=64)
    assert scored.embeddings is not None and served.embeddings is not None
    np.testing.assert_array_equal(scored.labels, served.labels)
    np.testing.assert_allclose(scored.probabilities, served.probabilities, rtol=0, atol=1e-5)
    np.testing.assert_allclose(scored.embeddings, served.embeddings, rtol=0, atol=1e-5)
    assert model.predict(TEXTS, with_embeddings=False).embeddings is None


class _Recorder:
    """A predictor whose logits and embedding are a text's first id: shows order and passes."""

    def __init__(self) -> None:
        self.passes: list[tuple[int, int]] = []  # (rows, width) of each padded pass

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [[len(t)] * len(t) for t in texts]

    def forward_ids(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        input_ids, _ = pad(batch, pad_id=0)
        self.passes.append(input_ids.shape)
        first = input_ids[:, :1].astype(np.float32)
        return np.hstack([-first, first]), np.repeat(first, 3, axis=1)


def test_forward_grouped_keeps_input_order_and_pads_per_pass() -> None:
    rec = _Recorder()
    texts = ["x" * n for n in (9, 2, 3, 40, 10, 2)]
    pred = forward_grouped(rec, rec.encode(texts))
    assert pred.embeddings is not None
    np.testing.assert_array_equal(pred.embeddings[:, 0], [9, 2, 3, 40, 10, 2])
    assert rec.passes == [(3, 3), (2, 10), (1, 40)]  # 2 2 3 | 9 10 | 40: factor 1.5
    assert forward_grouped(rec, []).labels.shape == (0,)


def test_pad_and_split_by_length() -> None:
    input_ids, mask = pad([[5, 6, 7], [8]], pad_id=1)
    np.testing.assert_array_equal(input_ids, [[5, 6, 7], [8, 1, 1]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])
    assert input_ids.dtype == mask.dtype == np.int64
    lengths = [5, 40, 6, 7, 8, 41]
    for group in split_by_length(lengths):
        assert max(lengths[i] for i in group) <= PAD_SPLIT_FACTOR * min(lengths[i] for i in group)
    # batch scoring: sorted by length (ties in input order), at most max_size a pass
    assert split_by_length([3, 1, 3, 2, 1], factor=None, max_size=2) == [[1, 4], [3, 0], [2]]


def test_the_inference_layer_imports_without_torch() -> None:
    """The serving image has no torch: the layer and its ONNX backend must import without it."""
    assert_imports_without_torch(
        "import sentiment_ops.inference, sentiment_ops.inference.onnx, sentiment_ops.inference.text\n"
        "from sentiment_ops.inference import META_FILE, OnnxPredictor, Prediction, TextEncoder, forward_grouped"
    )


ALLOWED_TO_IMPORT_SERVING = ("serving", "cli")


def _imported_modules(tree: ast.AST, package: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_only_serving_and_cli_import_serving() -> None:
    """``sentiment_ops.serving`` (the HTTP service) sits on top: the core (drift, pyfunc,
    modeling, inference, …) never imports it, not even inside a function."""
    root = Path(sentiment_ops.__file__).resolve().parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ALLOWED_TO_IMPORT_SERVING:
            continue
        package = ".".join(("sentiment_ops", *rel.parts[:-1]))
        for name in _imported_modules(ast.parse(path.read_text()), package):
            if name == "sentiment_ops.serving" or name.startswith("sentiment_ops.serving."):
                offenders.append(f"{rel}: {name}")
    assert not offenders, offenders


def test_core_never_imports_the_cli_toolkit() -> None:
    """typer and rich belong to ``cli/``: the library raises and returns, the CLI renders."""
    root = Path(sentiment_ops.__file__).resolve().parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "cli":
            continue
        package = ".".join(("sentiment_ops", *rel.parts[:-1]))
        for name in _imported_modules(ast.parse(path.read_text()), package):
            if name.split(".")[0] in ("typer", "rich", "click"):
                offenders.append(f"{rel}: {name}")
    assert not offenders, offenders
