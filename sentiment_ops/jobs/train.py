"""``sentops train``: fine-tune a base model on a corpus, evaluate it on validation, test
and the golden IMDB hold-out, log everything to MLflow and register it (``recipe.run_plan``);
with ``promote``, point ``serve.alias`` at the new version."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sentiment_ops.config import Settings, TrainSettings
from sentiment_ops.data import Corpus, Split, golden_test, load_corpus
from sentiment_ops.jobs import steps
from sentiment_ops.jobs.recipe import FineTunePlan, run_plan
from sentiment_ops.jobs.steps import ProgressFn, no_progress
from sentiment_ops.modeling import choose_device
from sentiment_ops.tracking.alias_history import AliasEvent
from sentiment_ops.tracking.runs import LoggedSplit

if TYPE_CHECKING:
    from sentiment_ops.modeling import SentimentModel
    from sentiment_ops.tracking.registry import Registry
    from sentiment_ops.tracking.runs import TrackedRun


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    version: int | None
    metrics: dict[str, float]
    train_seconds: float
    data: dict[str, Any] = field(default_factory=dict)
    promoted: AliasEvent | None = None  # the move of serve.alias, with promote=True


@dataclass
class TrainData:
    corpus: Corpus
    train: Split
    val: Split
    test: Split
    # the IMDB golden test (the test split itself when training on IMDB); None when the
    # classes lack negative or positive, so that a binary score cannot be read
    golden: Split | None


def load_train_data(cfg: TrainSettings, progress: ProgressFn = no_progress) -> TrainData:
    """The splits ``train`` fine-tunes and scores on, sampled and cut as the settings say."""
    progress("data", 0, 1)
    corpus = load_corpus(cfg.data, tuple(cfg.labels) if cfg.labels else None)
    test = corpus.test.head(cfg.eval_samples)
    golden = None
    if corpus.classes.has_poles():
        golden = test if corpus.name == "imdb" else golden_test(cfg.eval_samples)
    data = TrainData(
        corpus=corpus,
        train=training_sample(corpus.train, cfg),
        val=corpus.validation.head(cfg.val_samples),
        test=test,
        golden=golden,
    )
    progress("data", 1, 1)
    return data


SHORT_TEXT_SHARE = 4  # "short": the sample averages under max_length / 4 tokens


def training_sample(train: Split, cfg: TrainSettings) -> Split:
    """``train.max_samples`` seeded rows; when they are short texts (tweets, snippets:
    under a quarter of ``max_length`` tokens on average) and ``grow_short_samples`` is on,
    as many rows as hold the tokens of ``max_samples`` full-length ones: short texts cost
    little per row, so the same training budget holds several times the rows."""
    sample = train.sample(cfg.max_samples, seed=cfg.seed)
    if not cfg.grow_short_samples or cfg.max_samples is None or len(sample) >= len(train):
        return sample
    from sentiment_ops import textnorm
    from sentiment_ops.modeling import encode, load_tokenizer, resolve_base_model

    tokenizer = load_tokenizer(resolve_base_model(cfg.base_model))
    normalize = textnorm.get(textnorm.CURRENT)
    tokens = sum(len(ids) for ids in encode(tokenizer, normalize(sample.texts), cfg.max_length, cfg.head_tokens))
    if tokens * SHORT_TEXT_SHARE >= len(sample) * cfg.max_length:
        return sample
    rows = int(cfg.max_samples * cfg.max_length * len(sample) / max(tokens, 1))
    return train.sample(min(rows, len(train)), seed=cfg.seed)


def _params(settings: Settings, data: TrainData, base_path: str, commit: str) -> dict[str, Any]:
    from sentiment_ops import __version__

    cfg = settings.train
    return {
        "base_model": cfg.base_model,
        "base_model_path": base_path,
        "epochs": cfg.epochs,
        "learning_rate": cfg.learning_rate,
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "head_tokens": cfg.head_tokens,
        "length_buckets": cfg.length_buckets,
        "seed": cfg.seed,
        "device": choose_device(cfg.device),
        "world_size": os.environ.get("WORLD_SIZE", "1"),  # processes (GPUs) under torchrun
        "data": cfg.data,
        "data_source": data.corpus.source,
        "train_size": len(data.train),
        "validation_size": len(data.val),
        "test_size": len(data.test),
        "train_hash": data.train.hash,
        "validation_hash": data.val.hash,
        "test_hash": data.test.hash,
        **({"golden_size": len(data.golden), "golden_hash": data.golden.hash} if data.golden else {}),
        "labels": ",".join(data.corpus.classes.names),
        "git_commit": commit,
        "sentops_version": __version__,
    }


def _tags(cfg: TrainSettings, data: TrainData, commit: str) -> dict[str, str]:
    tags = {
        "sentops.kind": "train",
        "sentops.git_commit": commit,
        "sentops.data": cfg.data,
        "sentops.train_hash": data.train.hash,
        "sentops.base_model": cfg.base_model,
        "sentops.labels": ",".join(data.corpus.classes.names),
    }
    if data.golden is not None:
        tags["sentops.golden_hash"] = data.golden.hash
    return tags


def logged_splits(data: TrainData) -> dict[str, LoggedSplit]:
    """The run's dataset inputs by metric prefix: training, validation, golden (and the
    test split when it is not the golden one)."""
    name, source = data.corpus.name, data.corpus.source
    out = {
        "train": LoggedSplit(f"{name}-train", "training", data.train, source),
        "val": LoggedSplit(f"{name}-validation", "validation", data.val, source),
    }
    if data.golden is not None:
        out["golden"] = LoggedSplit("imdb-golden", "golden", data.golden, "imdb test split (first rows)")
    out["test"] = out["golden"] if data.golden is data.test else LoggedSplit(f"{name}-test", "test", data.test, source)
    return out


def version_description(cfg: TrainSettings, data: TrainData, metrics: dict[str, float]) -> str:
    """What the MLflow UI shows on the version's page: the data, the classes and the scores."""
    classes = data.corpus.classes
    text = (
        f"Trained by `sentops train` from `{cfg.base_model}` on {len(data.train)} rows of {data.corpus.name} "
        f"(train split `{data.train.hash}`, {cfg.epochs:g} epoch(s)); classes {classes}.\n\n"
    )
    if data.golden is not None:
        text += (
            f"Golden IMDB test ({len(data.golden)} rows, `{data.golden.hash}`"
            f"{'' if classes.is_binary else ', scored on negative vs positive'}): "
            f"accuracy {metrics['golden_accuracy']:.4f}, F1 {metrics['golden_f1']:.4f}."
        )
    if data.golden is not data.test:
        text += (
            f" {data.corpus.name} test: accuracy {metrics['test_accuracy']:.4f}, "
            f"macro-F1 {metrics['test_macro_f1']:.4f}."
        )
    return text.strip()


def _evaluate(
    model: SentimentModel, data: TrainData, batch_size: int, run: TrackedRun, progress: ProgressFn
) -> dict[str, float]:
    """Validation, test and golden metrics; the test split's plots and report go to ``run``."""
    progress("evaluate", 0, 2)
    metrics = steps.prefixed("val", steps.evaluate(model, data.val, batch_size)[0])
    progress("evaluate", 1, 2)
    test_metrics, test_pred = steps.evaluate(model, data.test, batch_size)
    metrics.update(steps.prefixed("test", test_metrics))
    if data.golden is not None and data.golden is not data.test:
        test_metrics = steps.evaluate(model, data.golden, batch_size)[0]
    if data.golden is not None:
        metrics.update(steps.prefixed("golden", test_metrics))
    progress("evaluate", 2, 2)
    steps.log_evaluation(run, data.test, test_pred, f"{data.corpus.name} test")
    return metrics


def train_plan(settings: Settings, data: TrainData, progress: ProgressFn = no_progress) -> FineTunePlan:
    """The run of ``sentops train``: a new model from ``train.base_model``, fine-tuned on
    ``data.train`` (validated on ``data.val``), scored on validation, test and golden."""
    from sentiment_ops.jobs.fit import FitOptions, new_model
    from sentiment_ops.provenance import git_commit

    cfg = settings.train
    model, base_path = new_model(settings, data.corpus.classes)
    commit = git_commit()

    def evaluate(model: SentimentModel, run: TrackedRun, seconds: float) -> dict[str, float]:
        metrics = {
            "train_seconds": seconds,
            "train_samples_per_second": len(data.train) * cfg.epochs / max(seconds, 1e-9),
        }
        metrics.update(_evaluate(model, data, cfg.eval_batch_size, run, progress))
        return metrics

    return FineTunePlan(
        run_name=f"train-{data.corpus.name}",
        tags=_tags(cfg, data, commit),
        params=_params(settings, data, base_path, commit),
        datasets=dict(logged_splits(data)),
        model=model,
        train=data.train,
        val=data.val,
        fit=FitOptions.from_train_settings(cfg),
        evaluate=evaluate,
        describe=lambda metrics: version_description(cfg, data, metrics),
        model_meta={"data": cfg.data},
        register=cfg.register_model,
    )


def train(
    settings: Settings, *, registry: Registry | None = None, promote: bool = False, progress: ProgressFn = no_progress
) -> TrainResult:
    """``sentops train``: fine-tune, evaluate, log everything to MLflow, register, and with
    ``promote`` point ``serve.alias`` at the new version. ``registry`` defaults to the one
    the settings name. Under ``torchrun`` a rank > 0 only fine-tunes (see ``_fine_tune_as_worker``)."""
    from sentiment_ops.tracking.client import check_reachable
    from sentiment_ops.tracking.registry import Registry

    if registry is None:
        check_reachable(settings.tracking_uri, settings.mlflow.timeout_s)  # fail before any work
    data = load_train_data(settings.train, progress)
    if distributed_rank() > 0:  # torchrun / accelerate launch: rank 0 alone logs and registers
        return _fine_tune_as_worker(settings, data)
    registry = registry or Registry(settings, check=False)
    done = run_plan(train_plan(settings, data, progress), settings, registry, progress)
    if done.version is not None and data.golden is not None:  # read by a retrain instead of scoring again
        from sentiment_ops.jobs.retrain_scores import keep_score

        golden = {k.removeprefix("golden_"): v for k, v in done.metrics.items() if k.startswith("golden_")}
        keep_score(registry, done.version, data.golden, golden)
    promoted = registry.promote(done.version) if promote and done.version is not None else None
    return TrainResult(
        done.run_id, done.model_uri, done.version, done.metrics, done.seconds, data.corpus.describe(), promoted
    )


def distributed_rank() -> int:
    """This process's global rank when launched by ``torchrun`` / ``accelerate launch``
    (they set ``RANK``); 0 otherwise."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _fine_tune_as_worker(settings: Settings, data: TrainData) -> TrainResult:
    """A rank > 0 of a multi-process launch: the same data and the same seeded model as
    rank 0, and its share of the distributed fine-tuning (the HF Trainer shards the batches).
    Rank 0 alone evaluates, logs to MLflow and registers, so one launch = one run, one version.
    Returns a result with an empty ``run_id``."""
    from sentiment_ops.jobs.fit import FitOptions, fine_tune, new_model

    model, _ = new_model(settings, data.corpus.classes)
    seconds = fine_tune(model, data.train, data.val, FitOptions.from_train_settings(settings.train))
    return TrainResult(
        run_id="", model_uri="", version=None, metrics={}, train_seconds=seconds, data=data.corpus.describe()
    )
