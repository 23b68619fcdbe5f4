"""Reference embeddings: held-out texts embedded by a model version's own encoder, the way
the server embeds its traffic.

They are stored as artifacts of the version's run (``reference/embeddings.npz`` and
``reference/meta.json``; for the ONNX int8 serving backend ``reference/onnx/…``), so drift
always compares like with like and a promotion carries its reference with it.

The backend matters: int8 embeddings differ from fp32 ones by little (mean cosine 0.997),
but systematically, and a calibrated test on 500 texts sees that difference on every
window (benchmarks/drift_benchmark.py: 100% false alarms with an fp32 reference and
int8-served windows). So the reference is embedded by the backend that serves."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sentiment_ops.data import Corpus, load_corpus
from sentiment_ops.errors import NotFoundError
from sentiment_ops.inference.onnx import ONNX_FILE, OnnxPredictor
from sentiment_ops.inference.passes import POOLING, Prediction, Predictor, forward_grouped
from sentiment_ops.tracking.client import mlflow_errors

if TYPE_CHECKING:  # torch: not imported for reading a reference (the serve image has none)
    from sentiment_ops.modeling import SentimentModel
    from sentiment_ops.tracking.registry import Registry

ARTIFACT_DIR = "reference"
BACKENDS = ("torch", "onnx")
REFERENCE_FILES = ("embeddings.npz", "meta.json")
CALIBRATION_FILE = "calibration.npz"  # optional: references made before it have none
REFERENCE_SEED = 7  # which held-out texts form the reference (fixed, not the train seed)
CALIBRATION_SEED = 8
# Held-out texts embedded beside the reference to calibrate the drift test for it: the
# calibration set's sampling error shrinks the test's power as 1/n + 1/N (docs/drift.md).
CALIBRATION_SAMPLES = 4000


@dataclass
class ReferenceMeta:
    data: str
    split: str
    data_hash: str
    count: int
    pooling: str
    dim: int
    label_mix: dict[str, float]  # predicted share of each class of the model, in index order
    created: str
    model_version: int | None = None
    run_id: str | None = None
    backend: str = "torch"  # how the texts were embedded: torch (fp32) or onnx (int8)
    # the calibration set: held-out texts the reference and the model did not use
    calibration_count: int = 0
    calibration_source: str | None = None
    # "corpus": held-out texts of ``data``; "served": texts a version served (``data`` says which)
    source: str = "corpus"


@dataclass(frozen=True)
class ReferencePlan:
    """What a reference is embedded from: ``samples`` texts of the ``data`` corpus's
    validation split and up to ``calibration`` further held-out texts of it; or, with
    ``texts``, those texts and ``calibration_texts`` as given (``served``: texts a version
    served, described by ``data`` and ``split``)."""

    data: str
    samples: int
    calibration: int = CALIBRATION_SAMPLES
    texts: tuple[str, ...] | None = None
    calibration_texts: tuple[str, ...] = ()
    split: str = "validation"

    @classmethod
    def served(cls, texts: list[str], calibration_texts: list[str], data: str, split: str) -> ReferencePlan:
        return cls(data, len(texts), len(calibration_texts), tuple(texts), tuple(calibration_texts), split)

    @property
    def source(self) -> str:
        return "corpus" if self.texts is None else "served"


@dataclass
class Reference:
    embeddings: np.ndarray  # float32 (n, dim)
    predicted: np.ndarray  # int64 predicted labels
    meta: ReferenceMeta
    calibration: np.ndarray | None = None  # float32 (N, dim): the calibration set, if any
    calibration_predicted: np.ndarray | None = None


def artifact_path(backend: str = "torch") -> str:
    """Where a backend's reference lives in the run: ``reference`` (torch) or ``reference/onnx``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} ({' | '.join(BACKENDS)})")
    return ARTIFACT_DIR if backend == "torch" else f"{ARTIFACT_DIR}/{backend}"


def embed_as_served(
    model: SentimentModel,
    texts: list[str],
    backend: str = "torch",
    cache_dir: Path | None = None,
    max_tokens: int | None = None,
    threads: int | None = None,
) -> Prediction:
    """Labels, probabilities and pooled embeddings exactly as ``sentops serve`` computes them:
    the backend's predictor, texts grouped into forward passes by the server's own rule
    (``inference.forward_grouped`` with ``serve.batch_max_tokens``).

    ``torch``: the model itself (fp32). ``onnx``: the serving int8 export (made in
    ``cache_dir``, the server's export cache, or a temporary folder)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} ({' | '.join(BACKENDS)})")
    with tempfile.TemporaryDirectory(prefix="sentops-onnx-") as tmp:
        predictor: Predictor = model
        if backend == "onnx":
            predictor = _onnx_predictor(model, Path(cache_dir or tmp), Path(tmp), threads)
        return forward_grouped(predictor, predictor.encode(texts), max_tokens=max_tokens)


def _onnx_predictor(model: SentimentModel, onnx_dir: Path, tmp: Path, threads: int | None) -> OnnxPredictor:
    if not (onnx_dir / ONNX_FILE).exists():
        # Export from the saved weights, as the server does (it loads the logged model):
        # a model fresh out of the Trainer does not always trace (seen: ComplexDouble).
        from sentiment_ops.modeling import SentimentModel

        model = SentimentModel.from_dir(model.save(tmp / "hf_model"))
    return OnnxPredictor.from_model(model, onnx_dir, threads)


def build_reference(
    model: SentimentModel,
    plan: ReferencePlan,
    backend: str = "torch",
    cache_dir: Path | None = None,
    max_tokens: int | None = None,
) -> Reference:
    """Embed the ``plan``'s texts with the serving ``backend`` (see ``embed_as_served``):
    ``plan.samples`` texts of the corpus's validation split (never its training split) and
    up to ``plan.calibration`` further held-out texts as its calibration set
    (``calibration_texts``); or the plan's given texts (``ReferencePlan.served``)."""
    if plan.texts is None:
        corpus = load_corpus(plan.data)
        split = corpus.validation.sample(plan.samples, seed=REFERENCE_SEED)
        texts, data_hash = split.texts, split.hash
        cal_texts = calibration_texts(corpus, split.texts, plan.calibration)
        cal_source = "validation (not in the reference), then test"
    else:
        texts, cal_texts = list(plan.texts), list(plan.calibration_texts)
        data_hash = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]  # unlabeled: texts only
        cal_source = "served texts (not in the reference)"
    both = embed_as_served(model, texts + cal_texts, backend, cache_dir, max_tokens)
    assert both.embeddings is not None
    n = len(texts)
    emb, labels = both.embeddings[:n], both.labels[:n]
    cal_emb, cal_pred = both.embeddings[n:], both.labels[n:]
    counts = np.bincount(labels, minlength=both.classes.k) / max(1, n)
    meta = ReferenceMeta(
        data=plan.data,
        split=plan.split,
        data_hash=data_hash,
        count=n,
        pooling=POOLING,
        dim=int(emb.shape[1]),
        label_mix={both.classes.names[i]: float(c) for i, c in enumerate(counts)},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        backend=backend,
        calibration_count=len(cal_texts),
        calibration_source=cal_source if cal_texts else None,
        source=plan.source,
    )
    return Reference(
        emb.astype(np.float32),
        labels,
        meta,
        cal_emb.astype(np.float32) if cal_texts else None,
        cal_pred if cal_texts else None,
    )


def calibration_texts(corpus: Corpus, reference_texts: list[str], count: int) -> list[str]:
    """Up to ``count`` held-out texts for the calibration set, none in the reference: the
    rest of the validation split first, then the test split (the model never trains on
    either), in a seeded random order. Drawn like the reference, so that with no shift the
    served traffic, the reference and the calibration set come from one distribution."""
    if count <= 0:
        return []
    taken = set(reference_texts)
    pool = [t for t in corpus.validation.texts if t not in taken]
    pool += [t for t in corpus.test.texts if t not in taken]
    order = np.random.default_rng(CALIBRATION_SEED).permutation(len(pool))[:count]
    return [pool[i] for i in order]


def save_reference(ref: Reference, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "embeddings.npz", embeddings=ref.embeddings, predicted=ref.predicted)
    if ref.calibration is not None and ref.calibration_predicted is not None:
        np.savez_compressed(folder / CALIBRATION_FILE, embeddings=ref.calibration, predicted=ref.calibration_predicted)
    (folder / "meta.json").write_text(json.dumps(asdict(ref.meta), indent=2))
    return folder


def load_reference_dir(folder: Path) -> Reference:
    with np.load(folder / "embeddings.npz") as npz:
        emb, predicted = npz["embeddings"], npz["predicted"]
    meta = ReferenceMeta(**json.loads((folder / "meta.json").read_text()))
    ref = Reference(emb, predicted, meta)
    if meta.calibration_count > 0 and (folder / CALIBRATION_FILE).exists():
        # the meta names the calibration set: a stale file left by an earlier embedding does not count
        with np.load(folder / CALIBRATION_FILE) as npz:
            if len(npz["embeddings"]) == meta.calibration_count:
                ref.calibration, ref.calibration_predicted = npz["embeddings"], npz["predicted"]
    return ref


def log_reference(registry: Registry, run_id: str, ref: Reference) -> None:
    """Attach a reference to a (possibly finished) run, in its backend's folder."""
    ref.meta.run_id = run_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_reference(ref, Path(tmp) / "ref")
        registry.log_artifacts(run_id, folder, artifact_path(ref.meta.backend))


def embed_and_log(
    registry: Registry,
    run_id: str,
    model: SentimentModel,
    plan: ReferencePlan,
    *,
    backend: str,
    max_tokens: int | None,
    cache_dir: Path | None = None,
    model_version: int | None = None,
) -> ReferenceMeta:
    """The one way a reference is made: ``build_reference`` of ``plan`` then
    ``log_reference`` to the model's run (``sentops train``, ``sentops retrain`` and
    ``sentops embed-reference``)."""
    ref = build_reference(model, plan, backend=backend, cache_dir=cache_dir, max_tokens=max_tokens)
    ref.meta.model_version = model_version
    with mlflow_errors(f"log reference to run {run_id}"):
        log_reference(registry, run_id, ref)
    return ref.meta


def download_reference(registry: Registry, run_id: str, dest: Path, backend: str = "torch") -> Reference:
    """The reference a run holds for ``backend``; NotFoundError (saying what to run) if none."""
    where = artifact_path(backend)
    hint = f"run {run_id} has no reference embeddings for the {backend} serving backend; run `sentops embed-reference`"
    try:
        files = [registry.download_artifacts(run_id, f"{where}/{name}", dest) for name in REFERENCE_FILES]
    except Exception as exc:
        raise NotFoundError(hint) from exc
    folder = Path(files[0]).parent
    if not all(Path(f).exists() for f in files):
        raise NotFoundError(hint)
    try:  # optional: references logged before calibration sets have none
        registry.download_artifacts(run_id, f"{where}/{CALIBRATION_FILE}", dest)
    except Exception:  # noqa: BLE001 - absent: the check says it is uncalibrated
        pass
    return load_reference_dir(folder)
