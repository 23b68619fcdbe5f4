"""Text normalisation that a model owns: named, versioned, saved with the model.

Every model version records the normaliser its training text went through
(``"text_normalizer": {"name": "sentops.clean", "version": 1}`` in the model's
``sentops.json`` and in the MLflow model metadata), and ``SentimentModel.encode`` (the one
step every forward pass starts with: serving on both backends, reference embeddings,
evaluation, fine-tuning, retraining on texts read from the store) applies it. Clients can
send text the way the training corpus was collected; the store keeps what they sent.

Registered normalisers (a spec never changes meaning once released; a change is a new
version):

* ``sentops.clean`` v1 (new models): ``<br>`` / ``<br />`` markup becomes a space and runs
  of whitespace collapse to one space, repeated until nothing changes, so normalising
  normalised text changes nothing (``<br<br />>`` ends up as a space too).
* ``sentops.clean`` v0 (legacy): one pass of the same rule, exactly what the corpus loader
  has always applied to training data (``data.clean_text``). Models logged before
  normalisers were recorded carry no spec; they were trained on such text and load with
  this one, so they behave as trained.
* ``identity`` v1: the text as given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sentiment_ops.errors import ModelLoadError

META_KEY = "text_normalizer"  # key in sentops.json and in the MLflow model metadata

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean_once(text: str) -> str:
    """``<br />`` markup → space, whitespace collapsed (one pass)."""
    return " ".join(_BR.sub(" ", text).split())


_BR_END = re.compile(r"<br ?/?>$", re.IGNORECASE)  # a match at the end of collapsed text


def clean(text: str) -> str:
    """``clean_once`` repeated until nothing changes, so ``clean(clean(t)) == clean(t)``.

    One pass is all real text needs; nested markup (``<br<br />>``: a pass leaves ``<br >``)
    goes to ``_clean_nested``, which reaches the same fixed point in linear time (repeating
    the pass would be quadratic in the nesting depth: a request-sized denial of service)."""
    out = clean_once(text)
    return out if _BR.search(out) is None else _clean_nested(out)


def _clean_nested(text: str) -> str:
    """Left to right with whitespace collapsed on the fly: whenever the output ends with a
    ``<br>`` tag, the tag becomes one space. A tag cannot contain ``<`` or ``>``, so tags never
    overlap, and every tag the repeated pass would expose is found here when its ``>`` lands."""
    out: list[str] = []
    for ch in text:
        if ch.isspace():
            if out and out[-1] != " ":
                out.append(" ")
            continue
        out.append(ch)
        if ch == ">":
            tail = "".join(out[-6:])  # collapsed whitespace: a tag is at most "<br />"
            tag = _BR_END.search(tail)
            if tag is not None:
                del out[len(out) - (len(tail) - tag.start()) :]
                if out and out[-1] != " ":
                    out.append(" ")
    return "".join(out).strip()


def _identity(text: str) -> str:
    return text


@dataclass(frozen=True)
class NormalizerSpec:
    name: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


CURRENT = NormalizerSpec("sentops.clean", 1)  # what newly trained models record
LEGACY = NormalizerSpec("sentops.clean", 0)  # models logged without a spec were trained on this

_REGISTRY: dict[NormalizerSpec, Callable[[str], str]] = {
    NormalizerSpec("sentops.clean", 0): clean_once,
    NormalizerSpec("sentops.clean", 1): clean,
    NormalizerSpec("identity", 1): _identity,
}


@dataclass(frozen=True)
class TextNormalizer:
    """A spec and its function: ``normalizer(texts)`` → the texts the model sees."""

    spec: NormalizerSpec
    fn: Callable[[str], str]

    def __call__(self, texts: Iterable[str]) -> list[str]:
        return [self.fn(t) for t in texts]


def get(spec: NormalizerSpec | Mapping[str, Any] | None = None) -> TextNormalizer:
    """The normaliser of ``spec`` (a spec or its dict; None → the current default).

    ModelLoadError for a spec this sentops does not know (a model saved by a newer one)."""
    if spec is None:
        spec = CURRENT
    if not isinstance(spec, NormalizerSpec):
        raw = spec
        try:
            spec = NormalizerSpec(str(raw["name"]), int(raw["version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"malformed {META_KEY} {raw!r}: needs a name and an integer version") from exc
    fn = _REGISTRY.get(spec)
    if fn is None:
        known = ", ".join(str(s) for s in _REGISTRY)
        raise ModelLoadError(f"unknown text normaliser {spec} (this sentops knows: {known}); upgrade sentiment-ops")
    return TextNormalizer(spec, fn)


def from_meta(meta: Mapping[str, Any]) -> TextNormalizer:
    """The normaliser a saved model recorded; ``LEGACY`` for models saved before specs were
    recorded (their training text went through one pass of the corpus cleaner)."""
    spec = meta.get(META_KEY)
    return get(LEGACY if spec is None else spec)
