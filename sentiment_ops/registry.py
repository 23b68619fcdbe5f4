"""MLflow: connection, experiment, model versions, aliases with history, lineage.

Aliases (``production``, ``candidate``) are the only lifecycle markers; the deprecated
registry stages are never used. Every alias move is appended to a history kept in tags of
the registered model (``sentiment_ops.alias_history``), so ``rollback`` works against any
tracking server, not only the embedded SQLite one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sentiment_ops.alias_history import AliasEvent, AliasLog, Move
from sentiment_ops.config import Settings, note_exported_tracking_uri
from sentiment_ops.errors import NotFoundError, RegistryUnavailableError, SentopsError
from sentiment_ops.paths import sqlite_file, writable_dir

log = logging.getLogger(__name__)

PARENT_TAG = "sentops.parent_version"


def _quiet_mlflow() -> None:
    # A down tracking server must fail in seconds, not after minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def check_reachable(uri: str, timeout_s: float) -> None:
    """For http(s) tracking URIs, ask the server's /health before doing anything."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    import httpx

    try:
        resp = httpx.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise RegistryUnavailableError(f"MLflow tracking server {uri} is unreachable: {exc}") from exc
    if resp.status_code >= 500:
        raise RegistryUnavailableError(f"MLflow tracking server {uri} answered {resp.status_code} on /health")


@contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions into SentopsError subclasses with one clear line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except SentopsError:
        raise
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        msg = str(exc.message if hasattr(exc, "message") else exc).splitlines()[0]
        if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in msg.lower():
            raise NotFoundError(f"{what}: {msg}") from exc
        if "connection" in msg.lower() or "max retries" in msg.lower():
            raise RegistryUnavailableError(f"{what}: MLflow is unreachable: {msg}") from exc
        raise SentopsError(f"{what}: {msg}") from exc
    except (ConnectionError, OSError) as exc:
        raise RegistryUnavailableError(f"{what}: MLflow is unreachable: {exc}") from exc


@dataclass
class VersionInfo:
    name: str
    version: int
    aliases: list[str]
    run_id: str | None
    created: str
    source: str
    parent_version: int | None
    golden_accuracy: float | None = None
    golden_f1: float | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry:
    """A thin layer over ``MlflowClient`` for one registered model."""

    def __init__(self, settings: Settings, check: bool = True, client: Any | None = None) -> None:
        """``client`` replaces the ``MlflowClient`` built from ``settings`` (tests pass a
        real client whose calls can fail on purpose)."""
        _quiet_mlflow()
        import mlflow
        from mlflow import MlflowClient

        self.settings = settings
        self.model_name = settings.mlflow.model_name
        self.tracking_uri = settings.tracking_uri
        for uri in {self.tracking_uri, settings.registry_uri}:
            db_file = sqlite_file(uri)
            if db_file is not None:  # one line naming the folder, not SQLite's "unable to open"
                writable_dir(db_file.parent, "sentops home" if db_file.parent == settings.home else "MLflow folder")
        if check:
            check_reachable(self.tracking_uri, settings.mlflow.timeout_s)
            if settings.registry_uri != self.tracking_uri:
                check_reachable(settings.registry_uri, settings.mlflow.timeout_s)
        before = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(settings.registry_uri)
        if os.environ.get("MLFLOW_TRACKING_URI") not in (None, before):
            note_exported_tracking_uri(self.tracking_uri)
        self.mlflow = mlflow
        self.client = client or MlflowClient(tracking_uri=self.tracking_uri, registry_uri=settings.registry_uri)

    # -- experiments -------------------------------------------------------------------
    def experiment_id(self, name: str | None = None) -> str:
        name = name or self.settings.mlflow.experiment
        with mlflow_errors(f"experiment {name!r}"):
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                return str(exp.experiment_id)
            location = None
            if self.tracking_uri.startswith("sqlite:"):
                # Keep artifacts in the sentops home, not in ./mlruns of whatever cwd.
                writable_dir(self.settings.artifact_root, "MLflow artifact folder")
                location = self.settings.artifact_root.resolve().as_uri()
            return str(self.client.create_experiment(name, artifact_location=location))

    # -- versions ----------------------------------------------------------------------
    def register(
        self, run_id: str, tags: dict[str, str] | None = None, source: str | None = None, artifact: str = "model"
    ) -> VersionInfo:
        """Register the model logged by ``run_id`` as a new version."""
        with mlflow_errors(f"run {run_id}"):
            run = self.client.get_run(run_id)
        source = source or self._model_source(run_id, artifact)
        with mlflow_errors(f"register run {run_id}"):
            try:
                self.client.get_registered_model(self.model_name)
            except Exception:  # noqa: BLE001 - create it when absent, errors re-raised below
                self.client.create_registered_model(
                    self.model_name, description="Sentiment classifier fine-tuned by sentops."
                )
            all_tags = {k: v for k, v in run.data.tags.items() if k.startswith("sentops.")}
            all_tags.update(tags or {})
            mv = self.client.create_model_version(
                self.model_name,
                source=source,
                run_id=run_id,
                tags={k: str(v) for k, v in all_tags.items()},
                model_id=_logged_model_id(source),
            )
        return self.get_version(int(mv.version))

    def _model_source(self, run_id: str, artifact: str) -> str:
        with mlflow_errors(f"run {run_id}"):
            models = self.mlflow.search_logged_models(
                experiment_ids=[self.client.get_run(run_id).info.experiment_id],
                filter_string=f"source_run_id = '{run_id}' AND name = '{artifact}'",
                output_format="list",
            )
        if not models:
            raise NotFoundError(f"run {run_id} has no logged model named {artifact!r}")
        return f"models:/{models[0].model_id}"

    def get_version(self, version: int) -> VersionInfo:
        with mlflow_errors(f"model {self.model_name!r} version {version}"):
            mv = self.client.get_model_version(self.model_name, str(version))
        return self._info(mv)

    def version_for_alias(self, alias: str) -> VersionInfo:
        with mlflow_errors(f"alias {alias!r} of model {self.model_name!r}"):
            mv = self.client.get_model_version_by_alias(self.model_name, alias)
        return self._info(mv)

    def alias_version(self, alias: str) -> int | None:
        """The version an alias points to, or None when the alias (or model) is absent."""
        try:
            return self.version_for_alias(alias).version
        except NotFoundError:
            return None

    def list_versions(self) -> list[VersionInfo]:
        with mlflow_errors(f"model {self.model_name!r}"):
            mvs = self.client.search_model_versions(f"name = '{self.model_name}'")
            # search_model_versions leaves aliases empty (MLflow 3.17 SQL store): take them
            # from the registered model instead.
            aliases = dict(self.client.get_registered_model(self.model_name).aliases or {}) if mvs else {}
        infos = [self._info(mv) for mv in mvs]
        for info in infos:
            info.aliases = sorted({*info.aliases, *(a for a, v in aliases.items() if int(v) == info.version)})
        return sorted(infos, key=lambda v: v.version, reverse=True)

    def _info(self, mv: Any) -> VersionInfo:
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = self.client.get_run(mv.run_id).data.metrics
            except Exception:  # noqa: BLE001 - a deleted run must not hide the version
                metrics = {}
        parent = mv.tags.get(PARENT_TAG)
        return VersionInfo(
            name=mv.name,
            version=int(mv.version),
            aliases=sorted(getattr(mv, "aliases", []) or []),
            run_id=mv.run_id,
            created=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC).isoformat(timespec="seconds"),
            source=mv.source,
            parent_version=int(parent) if parent and parent.isdigit() else None,
            golden_accuracy=metrics.get("golden_accuracy"),
            golden_f1=metrics.get("golden_f1"),
            tags=dict(mv.tags),
        )

    def model_uri(self, version: int) -> str:
        return f"models:/{self.model_name}/{version}"

    # -- aliases -----------------------------------------------------------------------
    def _registered_model(self) -> Any:
        with mlflow_errors(f"model {self.model_name!r}"):
            try:
                return self.client.get_registered_model(self.model_name)
            except Exception as exc:
                raise NotFoundError(f"registered model {self.model_name!r} does not exist") from exc

    def _alias_log(self, alias: str) -> tuple[AliasLog, int | None]:
        """The alias's history (an unconfirmed move settled against the alias) and the
        version the alias points at: one read of the registered model."""
        rm = self._registered_model()
        raw = (rm.aliases or {}).get(alias)
        current = int(raw) if raw is not None else None
        log_ = AliasLog(alias, dict(rm.tags or {}))
        log_.reconcile(current)
        return log_, current

    def _check_version(self, version: int) -> None:
        """NotFoundError for an unknown version (one request; get_version also reads the run)."""
        with mlflow_errors(f"model {self.model_name!r} version {version}"):
            self.client.get_model_version(self.model_name, str(version))

    def history(self, alias: str) -> list[AliasEvent]:
        """Every recorded move of ``alias``, oldest first."""
        return self._alias_log(alias)[0].events()

    def history_tail(self, alias: str, last: int | None = None) -> tuple[int, list[AliasEvent]]:
        """The number of recorded moves of ``alias`` and the last ``last`` of them (all
        when None), oldest first; only the chunks holding those are parsed."""
        log_ = self._alias_log(alias)[0]
        return log_.count, log_.events(last)

    def _tag_writers(self) -> tuple[Callable[[str, str], None], Callable[[str], None]]:
        def set_tag(key: str, value: str) -> None:
            self.client.set_registered_model_tag(self.model_name, key, value)

        def delete_tag(key: str) -> None:
            self.client.delete_registered_model_tag(self.model_name, key)

        return set_tag, delete_tag

    def _move(self, log_: AliasLog, move: Move) -> AliasEvent:
        """intent → alias → confirm (see sentiment_ops.alias_history)."""
        alias = log_.alias
        set_tag, delete_tag = self._tag_writers()
        what = f"record the history of alias {alias!r}"
        with mlflow_errors(what):  # a failure here changes nothing the user sees
            log_.write_intent(set_tag, delete_tag, move)
        try:
            with mlflow_errors(f"set alias {alias!r}"):
                self.client.set_registered_model_alias(self.model_name, alias, str(move.to_version))
        except SentopsError:
            # The request may have landed although its answer did not: trust the registry.
            if self.alias_version(alias) != move.to_version:  # (if this fails, the next read settles it)
                with contextlib.suppress(SentopsError), mlflow_errors(what):
                    log_.drop_intent(set_tag)  # else the next read drops it
                raise
        try:
            with mlflow_errors(what):
                log_.confirm(set_tag, move)
        except SentopsError as exc:
            # The alias moved and the intent is stored: every read counts the move as done.
            log.warning("alias %r moved to v%s; confirming its record failed (%s)", alias, move.to_version, exc)
        return move.event(alias)

    def promote(self, version: int, alias: str = "production") -> AliasEvent:
        """Point ``alias`` at ``version`` and record the move (both, or neither)."""
        self._check_version(version)
        log_, current = self._alias_log(alias)
        move = Move(_now(), current, version, "promote", back=log_.top)
        return self._move(log_, move)

    def rollback(self, alias: str = "production") -> AliasEvent:
        """Point ``alias`` back at the version it had before the current one.

        Promotions push onto a stack, rollbacks pop it, so repeated rollbacks walk back
        through history instead of bouncing between two versions. If the alias was moved
        outside sentops (e.g. the MLflow UI), it goes back to the last recorded version."""
        log_, current = self._alias_log(alias)
        if current is None:
            raise NotFoundError(f"alias {alias!r} of model {self.model_name!r} is not set")
        if log_.count == 0:
            raise NotFoundError(f"alias {alias!r} has no previous version to roll back to")
        top = log_.move(log_.top)
        if top.to_version != current:  # moved by hand: back to the last version sentops set
            target = top
        elif top.back >= 0:
            target = log_.move(top.back)
        else:
            raise NotFoundError(f"alias {alias!r} has no previous version to roll back to")
        self._check_version(target.to_version)  # a deleted version cannot be rolled back to
        return self._move(log_, Move(_now(), current, target.to_version, "rollback", back=target.back))

    def delete_alias(self, alias: str) -> None:
        with mlflow_errors(f"delete alias {alias!r}"):
            self.client.delete_registered_model_alias(self.model_name, alias)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_commit(cwd: Path | None = None) -> str:
    """The git commit of the working tree (or 'unknown' outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _logged_model_id(source: str) -> str | None:
    """``models:/<model_id>`` (a logged model) → its id. A tracking server refuses such a
    source unless the request names the same model id; the SQLite store does not check."""
    rest = source.removeprefix("models:/")
    if rest == source or not rest or "/" in rest or "@" in rest:
        return None
    return rest
