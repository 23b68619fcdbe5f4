"""The classes a model predicts: names in index order, chosen by the training data, saved
with the model (``sentops.json`` ``labels``) and read from it by everything downstream.

A model saved without ``labels`` predicts ``negative`` / ``positive`` (``BINARY``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sentiment_ops.errors import DataError

MIN_CLASSES, MAX_CLASSES = 2, 20
META_KEY = "labels"
BINARY_NAMES = ("negative", "positive")
# Names found in data are ordered by this first (a sentiment scale), then alphabetically.
_SCALE = {"negative": 0, "neutral": 1, "positive": 2}
# Spellings a binary file has always been allowed to use.
_BINARY_ALIASES = {"0": 0, "1": 1, "negative": 0, "positive": 1, "neg": 0, "pos": 1}


@dataclass(frozen=True)
class LabelSet:
    """Class names in index order: the model's output ``i`` is ``names[i]``."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not MIN_CLASSES <= len(self.names) <= MAX_CLASSES:
            raise DataError(f"a model needs {MIN_CLASSES} to {MAX_CLASSES} classes, got {len(self.names)}")
        folded = [n.strip().lower() for n in self.names]
        if any(not isinstance(n, str) or not n.strip() for n in self.names):
            raise DataError("class names must be non-empty strings")
        if len(set(folded)) != len(folded):
            raise DataError(f"class names repeat: {', '.join(self.names)}")

    @property
    def k(self) -> int:
        return len(self.names)

    @property
    def is_binary(self) -> bool:
        return self.names == BINARY_NAMES

    def __str__(self) -> str:
        return "/".join(self.names)

    def index(self, value: object) -> int | None:
        """The class index of a label as data, clients or people write it: a name (any case),
        an index 0..k-1 (int, integral float, or its digits); None when it is neither."""
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                return None
            value = int(value)
        if isinstance(value, int) or (hasattr(value, "dtype") and value.dtype.kind in "iu"):
            i = int(value)  # type: ignore[call-overload]
            return i if 0 <= i < self.k else None
        if isinstance(value, str):
            word = value.strip().lower()
            if self.is_binary and word in _BINARY_ALIASES:
                return _BINARY_ALIASES[word]
            for i, name in enumerate(self.names):
                if name.lower() == word:
                    return i
            if word.isdigit():
                return self.index(int(word))
        return None

    def name(self, index: int) -> str:
        return self.names[index]

    def has_poles(self) -> bool:
        """Whether the classes include ``negative`` and ``positive`` (a binary score can be read)."""
        return "negative" in self.names and "positive" in self.names

    def to_meta(self) -> dict[str, list[str]]:
        return {META_KEY: list(self.names)}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> LabelSet:
        names = meta.get(META_KEY)
        return BINARY if not names else cls(tuple(str(n) for n in names))


BINARY = LabelSet(BINARY_NAMES)


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (hasattr(value, "dtype") and value.dtype.kind in "iu"):
        return int(value)  # type: ignore[call-overload]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def infer(values: Sequence[object], where: str, line_offset: int = 0) -> LabelSet:
    """The classes of a ``label`` column with no names given: ``BINARY`` when every value is
    one of 0/1/negative/positive/neg/pos (as always); integers → their values in order;
    names → the names (negative < neutral < positive, then alphabetical). Errors name the
    first row that cannot be a label or that makes more than ``MAX_CLASSES`` classes."""
    if all(BINARY.index(v) is not None for v in values):
        return BINARY
    ints = [_integer(v) for v in values]
    if any(i is not None for i in ints) and not all(i is not None for i in ints):
        first = ints[0] is not None
        row = next(i for i, v in enumerate(ints) if (v is not None) != first)
        kind = "an index" if first else "a name"
        raise DataError(
            f"{where}: row {row + line_offset}: label {values[row]!r} is not {kind} like the first row's "
            f"{values[0]!r} (set train.labels to name the classes in order)"
        )
    if all(i is not None for i in ints):
        found = sorted({i for i in ints if i is not None})
        _check_count(found, values, [str(i) for i in ints], where, line_offset)
        return LabelSet(tuple(str(i) for i in found))
    words: list[str | None] = [v.strip() if isinstance(v, str) and v.strip() else None for v in values]
    for i, word in enumerate(words):
        if word is None:
            raise DataError(f"{where}: row {i + line_offset}: label {values[i]!r} is not a class name or index")
    seen: dict[str, str] = {}
    for word in words:
        assert word is not None
        seen.setdefault(word.lower(), word)
    _check_count(list(seen), values, [w.lower() if w else "" for w in words], where, line_offset)
    order = sorted(seen, key=lambda w: (_SCALE.get(w, len(_SCALE)), w))
    return LabelSet(tuple(seen[w] for w in order))


def _check_count(found: Iterable[object], values: Sequence[object], keys: list[str], where: str, offset: int) -> None:
    found = list(found)
    if len(found) < MIN_CLASSES:
        raise DataError(f"{where}: every row has the label {values[0]!r}; a classifier needs at least two classes")
    if len(found) > MAX_CLASSES:
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        row = sorted(first.values())[MAX_CLASSES]
        raise DataError(
            f"{where}: row {row + offset}: label {values[row]!r} makes more than {MAX_CLASSES} classes "
            "(set train.labels to name the classes, or check the label column)"
        )
