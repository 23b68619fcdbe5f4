"""Labels where they are worth the most: which served texts a person should label first.

    strategies.py  random | uncertain | novel | mixed over a pool (pure numpy, seeded)
    queue.py       the pool from the store's served window, the reference, the export

Only the names of the strategies live here (the CLI lists them in its help without loading
numpy, the store or MLflow); the ranking is ``labeling.strategies.select``, the queue
``labeling.queue.choose_to_label``.
"""

from __future__ import annotations

from enum import StrEnum


class Strategy(StrEnum):
    """How texts to label are chosen (``sentops feedback export --select``, ``/label``)."""

    RANDOM = "random"
    UNCERTAIN = "uncertain"
    NOVEL = "novel"
    MIXED = "mixed"

    @property
    def needs_embeddings(self) -> bool:
        return self in (Strategy.NOVEL, Strategy.MIXED)


__all__ = ["Strategy"]
