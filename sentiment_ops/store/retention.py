"""How long the store keeps what it holds (``store.retention_days``, ``sentops db prune``,
and the drift job after each check): ``prune`` deletes what is older than the retention,
in bounded batches.

What goes: predictions older than the cutoff, except labeled ones (the texts retraining
learns from, and what a person spent time on) unless ``include_labeled``; dead letters
(refused rows, with their text) and drift-check history rows (their details hold the
window's farthest texts) older than the cutoff. The monitoring runs in MLflow keep the
drift metrics for the long run.

Each batch is one short transaction that deletes at most ``batch_size`` rows, oldest first,
so PostgreSQL never holds many row locks for long and SQLite's write-ahead log stays small
(writers wait at most one batch). Deleted space is reused by new rows; the files do not
shrink (``VACUUM`` gives it back to the disk, docs/deploy.md)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from sentiment_ops.errors import ConfigError
from sentiment_ops.store.schema import Database, as_utc, dead_letters, drift_checks, predictions, store_error, utcnow

# Rows per transaction: bounds how long a writer waits for one (docs/benchmarks.md, "Store growth").
PRUNE_BATCH = 5_000


@dataclass
class PruneResult:
    """What one prune deleted (with ``dry_run``: would delete), by table."""

    days: int
    before: datetime  # the cutoff: rows created before it go
    dry_run: bool
    include_labeled: bool
    predictions: int
    labeled_kept: int  # labeled predictions older than the cutoff, kept (0 with include_labeled)
    dead_letters: int
    drift_checks: int
    batches: int  # transactions that deleted rows (0 on a dry run)
    seconds: float

    @property
    def deleted(self) -> int:
        return self.predictions + self.dead_letters + self.drift_checks

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "before": self.before.isoformat(),
            "dry_run": self.dry_run,
            "include_labeled": self.include_labeled,
            "deleted": self.deleted,
            "predictions": self.predictions,
            "labeled_kept": self.labeled_kept,
            "dead_letters": self.dead_letters,
            "drift_checks": self.drift_checks,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
        }


class Retention(Database):
    """Deleting what is older than the retention."""

    def prune(
        self,
        days: int,
        *,
        include_labeled: bool = False,
        dry_run: bool = False,
        batch_size: int = PRUNE_BATCH,
        now: datetime | None = None,
    ) -> PruneResult:
        """Delete predictions (labeled ones only with ``include_labeled``), dead letters and
        drift checks created more than ``days`` days before ``now`` (default: the present),
        ``batch_size`` rows per transaction. ``dry_run`` counts them and deletes nothing.
        Raises ConfigError for ``days`` or ``batch_size`` below 1, StoreError when the store
        fails (the batches committed before stay deleted: running it again finishes)."""
        if days < 1:
            raise ConfigError(f"retention must be at least 1 day, got {days}")
        if batch_size < 1:
            raise ConfigError(f"prune batch size must be at least 1, got {batch_size}")
        start = time.perf_counter()
        cutoff = (utcnow() if now is None else as_utc(now) or now) - timedelta(days=days)
        old = predictions.c.created_at < cutoff
        labeled = predictions.c.feedback_label.is_not(None)
        targets = [
            (predictions, old if include_labeled else sa.and_(old, predictions.c.feedback_label.is_(None))),
            (dead_letters, dead_letters.c.created_at < cutoff),
            (drift_checks, drift_checks.c.created_at < cutoff),
        ]
        counts: list[int] = []
        batches = 0
        try:
            labeled_kept = 0 if include_labeled else self._count(predictions, sa.and_(old, labeled))
            for table, where in targets:
                if dry_run:
                    counts.append(self._count(table, where))
                else:
                    n, b = self._delete_in_batches(table, where, batch_size)
                    counts.append(n)
                    batches += b
        except SQLAlchemyError as exc:
            raise store_error(f"cannot prune inference store {self.display_url}", exc) from exc
        return PruneResult(
            days=days,
            before=cutoff,
            dry_run=dry_run,
            include_labeled=include_labeled,
            predictions=counts[0],
            labeled_kept=labeled_kept,
            dead_letters=counts[1],
            drift_checks=counts[2],
            batches=batches,
            seconds=time.perf_counter() - start,
        )

    def _count(self, table: sa.Table, where: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())

    def _delete_in_batches(self, table: sa.Table, where: Any, batch_size: int) -> tuple[int, int]:
        """Delete the rows ``where`` selects, oldest first, ``batch_size`` per transaction.
        Each batch starts at the newest time the one before reached, so rows kept in between
        (labeled ones) are walked past once, not once per batch. Returns (rows, batches)."""
        created = table.c.created_at
        since: datetime | None = None
        total = batches = 0
        while True:
            pick = sa.select(table.c.id).where(where).order_by(created).limit(batch_size)
            if since is not None:
                pick = pick.where(created >= since)
            stmt = table.delete().where(table.c.id.in_(pick.scalar_subquery())).returning(created)
            with self.engine.begin() as conn:
                times = [r[0] for r in conn.execute(stmt)]
            if times:
                total += len(times)
                batches += 1
                since = max(times)
            if len(times) < batch_size:
                return total, batches
