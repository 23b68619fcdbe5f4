"""The registry of one model: experiments, run artifacts, model versions, aliases with
history, lineage (the connection itself: ``tracking.client``).

Aliases (``production``, ``candidate``) are the only lifecycle markers; the deprecated
registry stages are never used. Every alias move is appended to a history kept in tags of
the registered model (``tracking.alias_history``), so ``rollback`` works against any
tracking server, not only the embedded SQLite one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiment_ops.config import Settings
from sentiment_ops.errors import ModelLoadError, NotFoundError, SentopsError, first_line
from sentiment_ops.labels import BINARY
from sentiment_ops.paths import writable_dir
from sentiment_ops.redaction import redact, redact_value
from sentiment_ops.tracking.alias_history import AliasEvent, AliasLog, Move
from sentiment_ops.tracking.client import (
    check_stores,
    global_tracking_uri,
    is_not_found,
    make_client,
    mlflow_errors,
)
from sentiment_ops.tracking.model_meta import LABELS_TAG, logged_classes, tag_classes

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel

    from sentiment_ops.labels import LabelSet
    from sentiment_ops.modeling import SentimentModel

log = logging.getLogger(__name__)

PARENT_TAG = "sentops.parent_version"


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
    classes: list[str] = field(default_factory=lambda: list(BINARY.names))  # names in index order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry:
    """A thin layer over ``MlflowClient`` for one registered model."""

    def __init__(self, settings: Settings, check: bool = True, client: MlflowClient | None = None) -> None:
        """``client`` replaces the ``MlflowClient`` built from ``settings`` (tests pass a
        real client whose calls can fail on purpose); ``check``: probe an http(s) server first."""
        self.settings = settings
        self.model_name = settings.mlflow.model_name
        self.tracking_uri = settings.tracking_uri
        if client is None:
            client = make_client(settings, check)
        else:
            check_stores(settings, check)  # the same checks for a given client
        self.client: MlflowClient = client

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
        self,
        run_id: str,
        tags: dict[str, str] | None = None,
        source: str | None = None,
        artifact: str = "model",
        description: str | None = None,
    ) -> VersionInfo:
        """Register the model logged by ``run_id`` as a new version (with ``description``,
        the text the MLflow UI shows on the version's page); tags and description redacted."""
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
            all_tags = redact_value({k: str(v) for k, v in all_tags.items()})
            # A SQL registry store (not a server) looks the logged model of the source up
            # through the global tracking URI (MLflow 3.17, SqlAlchemyStore.create_model_version).
            with global_tracking_uri(self.tracking_uri):
                mv = self.client.create_model_version(
                    self.model_name,
                    source=source,
                    run_id=run_id,
                    tags=all_tags,
                    model_id=_logged_model_id(source),
                    description=redact(description) if description else description,
                )
        return self.get_version(int(mv.version))

    def _model_source(self, run_id: str, artifact: str) -> str:
        with mlflow_errors(f"run {run_id}"):
            models = self.client.search_logged_models(
                experiment_ids=[self.client.get_run(run_id).info.experiment_id],
                filter_string=f"source_run_id = '{run_id}' AND name = '{artifact}'",
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

    def _info(self, mv: ModelVersion) -> VersionInfo:
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
            source=mv.source or "",
            parent_version=int(parent) if parent and parent.isdigit() else None,
            golden_accuracy=metrics.get("golden_accuracy"),
            golden_f1=metrics.get("golden_f1"),
            tags=dict(mv.tags),
            classes=list(tag_classes(dict(mv.tags)).names),
        )

    def model_uri(self, version: int) -> str:
        """The version's name in MLflow (``models:/<name>/<N>``): for people and plain MLflow
        clients configured with this registry; sentops itself loads through ``load_model``."""
        return f"models:/{self.model_name}/{version}"

    # -- run artifacts -----------------------------------------------------------------
    def log_artifacts(self, run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
        """Upload the files of ``local_dir`` to ``artifact_path`` of run ``run_id`` (raw
        MLflow errors: callers name what failed with ``mlflow_errors``)."""
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def download_artifacts(self, run_id: str, path: str, dst_path: str | Path) -> str:
        """Download ``path`` of run ``run_id`` into ``dst_path``; the local path (raw MLflow errors)."""
        return self.client.download_artifacts(run_id, path, str(dst_path))

    # -- model artifacts ---------------------------------------------------------------
    def log_model(self, run_id: str, model: SentimentModel, work_dir: Path, extra_meta: dict[str, Any]) -> Any:
        """Log ``model`` as the logged model ``model`` of run ``run_id``: the logged model is
        created in the run's experiment with the run as its source and listed in the run's
        outputs (the lineage the MLflow UI shows: run → logged model → version). Returns
        MLflow's ``ModelInfo``; its ``model_uri`` (``models:/<model_id>``) is what ``register``
        takes as the version's source."""
        from sentiment_ops.tracking.pyfunc import MODEL_NAME, log_model

        with mlflow_errors(f"log the model of run {run_id}"):
            self.client.set_tag(run_id, LABELS_TAG, json.dumps(list(model.classes.names)))
            run = self.client.get_run(run_id)
            logged = self.client.create_logged_model(
                run.info.experiment_id,
                name=MODEL_NAME,
                source_run_id=run_id,
                params=redact_value({k: str(v) for k, v in run.data.params.items()}),
            )
        with global_tracking_uri(self.tracking_uri):
            return log_model(model, work_dir, run_id=run_id, model_id=logged.model_id, extra_meta=extra_meta)

    def download_uri(self, version: int) -> str:
        """Where the artifacts of ``version`` live, as a location any MLflow artifact
        repository reads without MLflow's global URIs (an ``mlflow-artifacts:`` location is
        resolved against this registry's tracking server)."""
        with mlflow_errors(f"model {self.model_name!r} version {version}"):
            uri = self.client.get_model_version_download_uri(self.model_name, str(version))
            model_id = _logged_model_id(uri)
            if model_id is not None:
                uri = self.client.get_logged_model(model_id).artifact_location
        if uri.startswith("mlflow-artifacts:"):
            from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

            uri = MlflowArtifactsRepository.resolve_uri(uri, self.tracking_uri)
        return str(uri)

    def version_classes(self, version: int) -> LabelSet:
        """The classes ``version`` predicts (its ``sentops.json``), read without loading it."""

        return logged_classes(self.download_uri(version))

    def set_version_tag(self, version: int, key: str, value: str) -> None:
        """Set one tag of ``version`` (redacted, as ``register`` redacts them)."""
        with mlflow_errors(f"model {self.model_name!r} version {version}"):
            self.client.set_model_version_tag(self.model_name, str(version), key, redact(value))

    def load_model(self, version: int) -> SentimentModel:
        """The ``SentimentModel`` of ``version``: its artifacts downloaded with this registry's
        URIs into a temporary folder, loaded into memory through the logged pyfunc.
        ModelLoadError when the version's files cannot be downloaded or loaded."""
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        from sentiment_ops.tracking.pyfunc import load_pyfunc

        uri, name = self.download_uri(version), self.model_uri(version)
        with tempfile.TemporaryDirectory(prefix="sentops-model-") as tmp:
            try:
                local = download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=self.tracking_uri)
            except (MlflowException, OSError) as exc:  # the version exists; its files do not load
                raise ModelLoadError(f"cannot load {name}: {first_line(exc)}") from exc
            model = load_pyfunc(local, name=name).model
        assert model is not None  # load_pyfunc guarantees it
        return model

    # -- aliases -----------------------------------------------------------------------
    def registered_model(self) -> RegisteredModel:
        """MLflow's RegisteredModel: NotFoundError (66) only when the model is absent; an
        unreachable registry is RegistryUnavailableError (69), not "does not exist"."""
        from mlflow.exceptions import MlflowException

        with mlflow_errors(f"model {self.model_name!r}"):
            try:
                return self.client.get_registered_model(self.model_name)
            except MlflowException as exc:
                if is_not_found(exc):
                    raise NotFoundError(f"registered model {self.model_name!r} does not exist") from exc
                raise

    def _alias_log(self, alias: str) -> tuple[AliasLog, int | None]:
        """The alias's history (an unconfirmed move settled against the alias) and the
        version the alias points at: one read of the registered model."""
        rm = self.registered_model()
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
        """intent → alias → confirm (see tracking.alias_history)."""
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

    def promote(self, version: int, alias: str | None = None) -> AliasEvent:
        """Point ``alias`` (default: ``serve.alias``, the one the server follows) at
        ``version`` and record the move (both, or neither)."""
        alias = alias or self.settings.serve.alias
        self._check_version(version)
        log_, current = self._alias_log(alias)
        move = Move(_now(), current, version, "promote", back=log_.top)
        return self._move(log_, move)

    def rollback(self, alias: str | None = None) -> AliasEvent:
        """Point ``alias`` (default: ``serve.alias``) back at the version it had before the
        current one.

        Promotions push onto a stack, rollbacks pop it, so repeated rollbacks walk back
        through history instead of bouncing between two versions. If the alias was moved
        outside sentops (e.g. the MLflow UI), it goes back to the last recorded version."""
        alias = alias or self.settings.serve.alias
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


def _logged_model_id(source: str) -> str | None:
    """``models:/<model_id>`` (a logged model) → its id. A tracking server refuses such a
    source unless the request names the same model id; the SQLite store does not check."""
    rest = source.removeprefix("models:/")
    if rest == source or not rest or "/" in rest or "@" in rest:
        return None
    return rest
