"""Reference embeddings: held-out texts embedded by a model version's own encoder.

They are stored as artifacts of the version's run (``reference/embeddings.npz`` and
``reference/meta.json``), so drift always compares like with like and a promotion carries
its reference with it."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_ops.data import LABEL_NAMES, load_corpus
from sentiment_ops.errors import NotFoundError
from sentiment_ops.modeling import POOLING, SentimentModel

ARTIFACT_DIR = "reference"
REFERENCE_SEED = 7  # which held-out texts form the reference (fixed, not the train seed)


@dataclass
class ReferenceMeta:
    data: str
    split: str
    data_hash: str
    count: int
    pooling: str
    dim: int
    label_mix: dict[str, float]  # predicted-label shares of the reference
    created: str
    model_version: int | None = None
    run_id: str | None = None


@dataclass
class Reference:
    embeddings: np.ndarray  # float32 (n, dim)
    predicted: np.ndarray  # int64 predicted labels
    meta: ReferenceMeta


def build_reference(model: SentimentModel, data: str = "imdb", samples: int = 1000) -> Reference:
    """Embed ``samples`` texts of the corpus's validation split (never its training split)."""
    split = load_corpus(data).validation.sample(samples, seed=REFERENCE_SEED)
    pred = model.predict(split.texts, with_embeddings=True)
    assert pred.embeddings is not None
    counts = np.bincount(pred.labels, minlength=2) / max(1, len(split))
    meta = ReferenceMeta(
        data=data,
        split="validation",
        data_hash=split.hash,
        count=len(split),
        pooling=POOLING,
        dim=int(pred.embeddings.shape[1]),
        label_mix={LABEL_NAMES[i]: float(c) for i, c in enumerate(counts)},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return Reference(pred.embeddings.astype(np.float32), pred.labels, meta)


def save_reference(ref: Reference, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "embeddings.npz", embeddings=ref.embeddings, predicted=ref.predicted)
    (folder / "meta.json").write_text(json.dumps(asdict(ref.meta), indent=2))
    return folder


def load_reference_dir(folder: Path) -> Reference:
    with np.load(folder / "embeddings.npz") as npz:
        emb, predicted = npz["embeddings"], npz["predicted"]
    meta = ReferenceMeta(**json.loads((folder / "meta.json").read_text()))
    return Reference(emb, predicted, meta)


def log_reference(client: Any, run_id: str, ref: Reference) -> None:
    """Attach a reference to a (possibly finished) run."""
    ref.meta.run_id = run_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_reference(ref, Path(tmp) / ARTIFACT_DIR)
        client.log_artifacts(run_id, str(folder), ARTIFACT_DIR)


def download_reference(client: Any, run_id: str, dest: Path) -> Reference:
    try:
        local = client.download_artifacts(run_id, ARTIFACT_DIR, str(dest))
    except Exception as exc:
        raise NotFoundError(f"run {run_id} has no reference embeddings; run `sentops embed-reference`") from exc
    folder = Path(local)
    if not (folder / "embeddings.npz").exists():
        raise NotFoundError(f"run {run_id} has no reference embeddings; run `sentops embed-reference`")
    return load_reference_dir(folder)
