"""Texts → token ids, the first step of every forward pass: the model's normaliser, its
tokenizer, head + tail truncation.

Torch-free. ``SentimentModel.encode`` runs ``encode`` with its transformers tokenizer; the
serving image without torch (Dockerfile target ``serve``) runs ``TextEncoder``, which
reads a saved model folder with the ``tokenizers`` library alone (the ``tokenizer.json``
that transformers' fast tokenizers save, and ``sentops.json``) and gives the same ids."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiment_ops import textnorm
from sentiment_ops.errors import ModelLoadError
from sentiment_ops.labels import LabelSet

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

META_FILE = "sentops.json"


def head_tail(
    raw: Sequence[Sequence[int]], prefix: list[int], suffix: list[int], max_length: int, head_tokens: int = 0
) -> list[list[int]]:
    """Token ids with special tokens, at most ``max_length`` long.

    Texts that are too long keep their first ``head_tokens`` tokens and fill the rest of
    the budget from their end (reviews tend to state the verdict last)."""
    budget = max_length - len(prefix) - len(suffix)
    out = []
    for full in raw:
        ids = list(full)
        if len(ids) > budget:
            if 0 < head_tokens < budget:
                ids = ids[:head_tokens] + ids[len(ids) - (budget - head_tokens) :]
            else:
                ids = ids[:budget]
        out.append(prefix + ids + suffix)
    return out


def split_specials(bare: list[int], full: list[int]) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence (e.g. [CLS] … [SEP]),
    found by comparing an encoding with and without special tokens."""
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return list(full[:i]), list(full[i + len(bare) :])
    return [], []  # pragma: no cover - every tokenizer we know keeps the text ids intact


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids a transformers tokenizer puts before and after a single sequence (e.g.
    [CLS] … [SEP]).

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


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, head_tokens: int = 0
) -> list[list[int]]:
    """Token ids (with special tokens, at most ``max_length`` long, ``head_tail``) of
    already-normalised ``texts`` with a transformers tokenizer."""
    raw = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    prefix, suffix = special_tokens(tokenizer)
    return head_tail(raw, prefix, suffix, max_length, head_tokens)


def read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META_FILE
    return json.loads(meta_path.read_text()) if meta_path.exists() else {}


class TextEncoder:
    """``encode`` of a saved model without torch or transformers: the model's normaliser,
    its fast tokenizer (``tokenizer.json``) and the truncation it was trained with."""

    def __init__(self, path: str | Path, max_length: int | None = None) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        meta = read_meta(path)
        try:
            self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:
            raise ModelLoadError(f"cannot load tokenizer.json from {path}: {exc}") from exc
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.normalizer: Callable[[list[str]], list[str]] = textnorm.from_meta(meta)
        self.max_length = max_length or int(meta.get("max_length", 256))
        self.head_tokens = int(meta.get("head_tokens", 0))
        self.classes = LabelSet.from_meta(meta)
        bare = self.tokenizer.encode("a", add_special_tokens=False).ids
        full = self.tokenizer.encode("a", add_special_tokens=True).ids
        self.prefix, self.suffix = split_specials(bare, full)
        self.pad_id = self._pad_id(path)

    def _pad_id(self, path: Path) -> int:
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            file = path / name
            if file.exists():
                token = json.loads(file.read_text()).get("pad_token")
                token = token.get("content") if isinstance(token, dict) else token
                found = self.tokenizer.token_to_id(token) if isinstance(token, str) else None
                if found is not None:
                    return int(found)
        return 0

    def encode(self, texts: list[str]) -> list[list[int]]:
        encodings = self.tokenizer.encode_batch(self.normalizer(texts), add_special_tokens=False)
        return head_tail([e.ids for e in encodings], self.prefix, self.suffix, self.max_length, self.head_tokens)
