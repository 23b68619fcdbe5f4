"""What the drift check reads and writes: the window of recent served predictions of a
model version (``window``), how that window splits by serving backend
(``backend_counts``), and the history of drift checks (``record_drift_check``,
``drift_history``, and the last check of each version for ``/metrics``:
``latest_drift_checks``). A check is kept without served texts: its farthest rows by id and
distance only (the texts, when kept, are in ``predictions``)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from sentiment_ops.errors import StoreError
from sentiment_ops.store.predictions import PredictionRecord, record_of
from sentiment_ops.store.schema import Database, as_utc, drift_checks, first_line, predictions, utcnow


class DriftLog(Database):
    """The served rows drift compares with the reference, and the ``drift_checks`` table."""

    def window(
        self,
        model_name: str,
        model_version: int | None,
        size: int,
        backend: str | None = None,
        source: str = "api",
    ) -> list[PredictionRecord]:
        """The most recent ``size`` predictions of a model version from ``source`` (``api``:
        served; ``batch``: ``sentops score --log``), oldest first; with ``backend``, only
        those embedded by that backend."""
        q = _recent_served(sa.select(predictions), model_name, model_version, size, source)
        if backend is not None:
            q = q.where(predictions.c.backend == backend)
        return [record_of(r) for r in reversed(self._select(q))]

    def backend_counts(
        self, model_name: str, model_version: int | None, size: int, source: str = "api"
    ) -> dict[str | None, int]:
        """How the most recent ``size`` predictions of a version from ``source`` split by
        backend (None = rows logged before the backend was recorded)."""
        sub = _recent_served(sa.select(predictions.c.backend), model_name, model_version, size, source).subquery()
        q = sa.select(sub.c.backend, sa.func.count()).group_by(sub.c.backend)
        return {r[0]: int(r[1]) for r in self._select(q)}

    def record_drift_check(self, model_name: str, model_version: int | None, report: dict[str, Any]) -> int:
        row = {
            "created_at": utcnow(),
            "model_name": model_name,
            "model_version": model_version,
            "window": int(report.get("window", 0)),
            "n_rows": int(report.get("n_rows", 0)),
            "drift": bool(report.get("drift", False)),
            "p_value": report.get("p_value"),
            "mmd2": report.get("mmd2"),
            "cosine_distance": report.get("cosine_distance"),
            "details": json.dumps(without_texts(report), default=str),
        }
        try:
            with self.engine.begin() as conn:
                result = conn.execute(drift_checks.insert().values(**row))
                key = result.inserted_primary_key
                assert key is not None  # an INSERT of one row always has a primary key
                return int(key[0])
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record drift check: {first_line(exc)}") from exc

    def latest_drift_checks(self, model_name: str, versions: int = 10) -> list[dict[str, Any]]:
        """The last check of each of the ``versions`` newest checked versions of a model
        (newest version first; of ``details`` only ``monitor``, the repeated mode's running
        state, and ``label_mix``, the predicted class shares, each or None): what ``/metrics``
        shows."""
        newest = (
            sa.select(sa.func.max(drift_checks.c.id).label("id"))
            .where(drift_checks.c.model_name == model_name)
            .group_by(drift_checks.c.model_version)
            .subquery()
        )
        q = (
            sa.select(drift_checks)
            .where(drift_checks.c.id.in_(sa.select(newest.c.id)))
            .order_by(drift_checks.c.model_version.desc().nulls_last())
            .limit(versions)
        )
        out = self._select_dicts(q)
        for check in out:  # of the details, the repeated mode's running state and the label mix
            details = json.loads(check.pop("details") or "{}")
            monitor, mix = details.get("monitor"), details.get("label_mix")
            check["monitor"] = monitor if isinstance(monitor, dict) else None
            check["label_mix"] = mix if isinstance(mix, dict) and mix else None
        return out

    def drift_history(self, model_name: str, limit: int = 1000, version: int | None = None) -> list[dict[str, Any]]:
        """The ``limit`` most recent checks of a model (of one ``version`` when given),
        oldest first."""
        q = sa.select(drift_checks).where(drift_checks.c.model_name == model_name)
        if version is not None:
            q = q.where(drift_checks.c.model_version == version)
        q = q.order_by(drift_checks.c.created_at.desc(), drift_checks.c.id.desc()).limit(limit)
        out = []
        for r in reversed(self._select(q)):
            d = dict(r._mapping)
            d["created_at"] = as_utc(d["created_at"])
            d["details"] = without_texts(json.loads(d["details"])) if d["details"] else {}
            out.append(d)
        return out


def without_texts(report: dict[str, Any]) -> dict[str, Any]:
    """A drift report (as a dict) with no served text: the farthest rows without ``text``
    (checks recorded before this rule held them; they are left out when read, too)."""
    far = report.get("farthest")
    if not isinstance(far, list):
        return report
    rows = [{k: v for k, v in f.items() if k != "text"} if isinstance(f, dict) else f for f in far]
    return {**report, "farthest": rows}


def _recent_served(q: Any, model_name: str, model_version: int | None, size: int, source: str = "api") -> Any:
    """``q`` narrowed to the ``size`` most recent rows of a model (and version) from
    ``source`` (``api``: served), newest first: the drift window and its backend split read
    the same rows."""
    q = (
        q.where(predictions.c.model_name == model_name, predictions.c.source == source)
        .order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
        .limit(size)
    )
    if model_version is not None:
        q = q.where(predictions.c.model_version == model_version)
    return q
