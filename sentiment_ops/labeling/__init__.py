"""Labels where they are worth the most: which served texts a person should label first.

    strategies.py  random | uncertain | novel | mixed over a pool (pure numpy, seeded)
    queue.py       the pool from the store's served window, the reference, the export

Only the strategies are imported here (the CLI lists them in its help without loading the
store or MLflow); the queue is ``sentiment_ops.labeling.queue``.
"""

from __future__ import annotations

from sentiment_ops.labeling.strategies import Pick, Strategy, select

__all__ = ["Pick", "Strategy", "select"]
