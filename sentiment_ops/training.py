"""Fine-tuning with the Hugging Face ``Trainer``, evaluation, and the MLflow run around it."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback

from sentiment_ops import lifecycle
from sentiment_ops.config import Settings, TrainSettings
from sentiment_ops.data import Corpus, Split, golden_test, load_corpus
from sentiment_ops.evaluation import classification_metrics
from sentiment_ops.lifecycle import ProgressFn, no_progress
from sentiment_ops.modeling import (
    SentimentModel,
    choose_device,
    load_classifier,
    load_tokenizer,
    prediction_from_logits,
    resolve_base_model,
)
from sentiment_ops.tracking.alias_history import AliasEvent
from sentiment_ops.tracking.runs import LoggedSplit, TrackedRun, tracked_run

if TYPE_CHECKING:
    from sentiment_ops.tracking.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class FitOptions:
    """How ``fine_tune`` runs. Its values come from the settings, never from defaults of
    its own: ``from_train_settings`` (``sentops train``) or ``from_retrain_settings``."""

    epochs: float
    learning_rate: float
    batch_size: int
    eval_batch_size: int
    warmup_ratio: float
    weight_decay: float
    seed: int
    device: str
    # Batches of similar token length, in shuffled order: mixes of short tweets and long
    # reviews (retraining with replay) then pad far less. Off = the Trainer's random order.
    length_buckets: bool

    @classmethod
    def from_train_settings(cls, cfg: TrainSettings) -> FitOptions:
        """The options ``sentops train`` fine-tunes with (the ``train`` settings section)."""
        return cls(
            epochs=cfg.epochs,
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
            eval_batch_size=cfg.eval_batch_size,
            warmup_ratio=cfg.warmup_ratio,
            weight_decay=cfg.weight_decay,
            seed=cfg.seed,
            device=cfg.device,
            length_buckets=cfg.length_buckets,
        )

    @classmethod
    def from_retrain_settings(cls, settings: Settings, epochs: float | None = None) -> FitOptions:
        """The options ``sentops retrain`` fine-tunes with: ``train`` overlaid by the
        ``retrain`` section (epochs, learning rate, length buckets)."""
        opts = cls.from_train_settings(settings.train)
        opts.epochs = settings.retrain.epochs if epochs is None else epochs
        opts.learning_rate = settings.retrain.learning_rate
        opts.length_buckets = settings.retrain.length_buckets
        return opts


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    version: int | None
    metrics: dict[str, float]
    train_seconds: float
    data: dict[str, Any] = field(default_factory=dict)
    promoted: AliasEvent | None = None  # the move of serve.alias, with promote=True


def cpu_bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class _Dataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, ids: list[list[int]], labels: np.ndarray) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": int(self.labels[i])}


class _LengthBuckets(torch.utils.data.Sampler):  # type: ignore[type-arg]
    """Index order whose consecutive ``batch_size`` chunks have similar lengths.

    Each epoch: shuffle, sort by length (stable, so ties stay shuffled), cut into batches,
    shuffle the full batches and put the one partial batch last (the DataLoader cuts the
    order into chunks, so a partial batch in the middle would misalign the rest)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Any:
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        order = rng.permutation(len(self.lengths))
        order = order[np.argsort(self.lengths[order], kind="stable")]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        partial = [b for b in batches if len(b) < self.batch_size]
        full = [b for b in batches if len(b) == self.batch_size]
        rng.shuffle(full)  # type: ignore[arg-type]
        for batch in full + partial:
            yield from (int(i) for i in batch)


class _Trainer(Trainer):
    def __init__(self, *args: Any, sampler: torch.utils.data.Sampler | None = None, **kw: Any) -> None:  # type: ignore[type-arg]
        self._sentops_sampler = sampler
        super().__init__(*args, **kw)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        return self._sentops_sampler or super()._get_train_sampler(train_dataset)


class _Callback(TrainerCallback):
    def __init__(self, progress: ProgressFn, on_metrics: Callable[[dict[str, float], int], object]) -> None:
        self.progress, self.on_metrics = progress, on_metrics

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.progress("train", state.global_step, state.max_steps)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if logs and "loss" in logs:
            self.on_metrics({"train_loss": float(logs["loss"])}, state.global_step)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kw: Any
    ) -> None:
        if metrics:
            epoch = round(state.epoch or 0)
            vals = {
                f"val_{k[5:]}": float(v)
                for k, v in metrics.items()
                if k.startswith("eval_") and isinstance(v, (int, float))
            }
            vals = {k: v for k, v in vals.items() if not k.endswith(("_runtime", "_per_second", "epoch"))}
            self.on_metrics(vals, epoch)


def fine_tune(
    model: SentimentModel,
    train: Split,
    val: Split | None,
    opts: FitOptions,
    progress: ProgressFn = no_progress,
    on_metrics: Callable[[dict[str, float], int], object] | None = None,
) -> float:
    """Fine-tune ``model`` in place with the HF Trainer; returns the training seconds."""
    device = choose_device(opts.device)
    use_bf16 = (device == "cuda" and torch.cuda.is_bf16_supported()) or (device == "cpu" and cpu_bf16_supported())
    tok = model.tokenizer
    train_ds = _Dataset(model.encode(train.texts), train.labels)
    val_ds = _Dataset(model.encode(val.texts), val.labels) if val is not None and len(val) else None

    def compute(pred: Any) -> dict[str, float]:
        p = prediction_from_logits(np.asarray(pred.predictions), None)
        return classification_metrics(np.asarray(pred.label_ids), p.probabilities)

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=opts.epochs,
            learning_rate=opts.learning_rate,
            per_device_train_batch_size=opts.batch_size,
            per_device_eval_batch_size=opts.eval_batch_size,
            warmup_steps=opts.warmup_ratio,  # a float < 1 is a ratio of all steps
            weight_decay=opts.weight_decay,
            lr_scheduler_type="linear",
            # Per-epoch validation only when there is more than one epoch: the final
            # validation scores are computed once after training anyway.
            eval_strategy="epoch" if val_ds is not None and opts.epochs > 1 else "no",
            save_strategy="no",
            logging_steps=10,
            report_to="none",
            disable_tqdm=True,
            seed=opts.seed,
            use_cpu=device == "cpu",
            # bf16 autocast: on CUDA, and on CPUs with native bf16 (1.45x here, measured).
            bf16=use_bf16,
            dataloader_num_workers=0,
        )
        model.model.train()
        sampler = None
        if opts.length_buckets:
            sampler = _LengthBuckets([len(x) for x in train_ds.ids], opts.batch_size, opts.seed)
        trainer = _Trainer(
            sampler=sampler,
            model=model.model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds,
            data_collator=DataCollatorWithPadding(tok),
            compute_metrics=compute,
            callbacks=[_Callback(progress, on_metrics or (lambda m, s: None))],
        )
        trainer.remove_callback(PrinterCallback)  # metrics go to MLflow, not stdout
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    model.model.eval()
    model.device = str(next(model.model.parameters()).device)
    return seconds


def new_model(settings: Settings) -> tuple[SentimentModel, str]:
    cfg = settings.train
    path = resolve_base_model(cfg.base_model)
    set_seed(cfg.seed)  # the new classification head is initialised from this seed
    tok = load_tokenizer(path)
    clf = load_classifier(path)
    return SentimentModel(clf, tok, cfg.max_length, cfg.head_tokens), path


def distributed_rank() -> int:
    """This process's global rank when launched by ``torchrun`` / ``accelerate launch``
    (they set ``RANK``); 0 otherwise."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@dataclass
class TrainData:
    corpus: Corpus
    train: Split
    val: Split
    test: Split
    golden: Split  # the IMDB golden test (the test split itself when training on IMDB)


def load_train_data(cfg: TrainSettings, progress: ProgressFn = no_progress) -> TrainData:
    """The splits ``train`` fine-tunes and scores on, sampled and cut as the settings say."""
    progress("data", 0, 1)
    corpus = load_corpus(cfg.data)
    test = corpus.test.head(cfg.eval_samples)
    data = TrainData(
        corpus=corpus,
        train=corpus.train.sample(cfg.max_samples, seed=cfg.seed),
        val=corpus.validation.head(cfg.val_samples),
        test=test,
        golden=test if corpus.name == "imdb" else golden_test(cfg.eval_samples),
    )
    progress("data", 1, 1)
    return data


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
        "golden_size": len(data.golden),
        "train_hash": data.train.hash,
        "validation_hash": data.val.hash,
        "test_hash": data.test.hash,
        "golden_hash": data.golden.hash,
        "git_commit": commit,
        "sentops_version": __version__,
    }


def _tags(cfg: TrainSettings, data: TrainData, commit: str) -> dict[str, str]:
    return {
        "sentops.kind": "train",
        "sentops.git_commit": commit,
        "sentops.data": cfg.data,
        "sentops.train_hash": data.train.hash,
        "sentops.golden_hash": data.golden.hash,
        "sentops.base_model": cfg.base_model,
    }


def logged_splits(data: TrainData) -> dict[str, LoggedSplit]:
    """The run's dataset inputs by metric prefix: training, validation, golden (and the
    test split when it is not the golden one)."""
    name, source = data.corpus.name, data.corpus.source
    out = {
        "train": LoggedSplit(f"{name}-train", "training", data.train, source),
        "val": LoggedSplit(f"{name}-validation", "validation", data.val, source),
        "golden": LoggedSplit("imdb-golden", "golden", data.golden, "imdb test split (first rows)"),
    }
    out["test"] = out["golden"] if data.golden is data.test else LoggedSplit(f"{name}-test", "test", data.test, source)
    return out


def version_description(cfg: TrainSettings, data: TrainData, metrics: dict[str, float]) -> str:
    """What the MLflow UI shows on the version's page: the data and the golden scores."""
    text = (
        f"Trained by `sentops train` from `{cfg.base_model}` on {len(data.train)} rows of {data.corpus.name} "
        f"(train split `{data.train.hash}`, {cfg.epochs:g} epoch(s)).\n\n"
        f"Golden IMDB test ({len(data.golden)} rows, `{data.golden.hash}`): "
        f"accuracy {metrics['golden_accuracy']:.4f}, F1 {metrics['golden_f1']:.4f}."
    )
    if data.golden is not data.test:
        text += f" {data.corpus.name} test: accuracy {metrics['test_accuracy']:.4f}, F1 {metrics['test_f1']:.4f}."
    return text


def _evaluate(
    model: SentimentModel, data: TrainData, batch_size: int, run: TrackedRun, progress: ProgressFn
) -> dict[str, float]:
    """Validation, test and golden metrics; the test split's plots and report go to ``run``."""
    progress("evaluate", 0, 2)
    metrics = lifecycle.prefixed("val", lifecycle.evaluate(model, data.val, batch_size)[0])
    progress("evaluate", 1, 2)
    test_metrics, test_pred = lifecycle.evaluate(model, data.test, batch_size)
    metrics.update(lifecycle.prefixed("test", test_metrics))
    if data.golden is not data.test:
        test_metrics = lifecycle.evaluate(model, data.golden, batch_size)[0]
    metrics.update(lifecycle.prefixed("golden", test_metrics))
    progress("evaluate", 2, 2)
    lifecycle.log_evaluation(run, data.test, test_pred, f"{data.corpus.name} test")
    return metrics


def train(
    settings: Settings, *, registry: Registry | None = None, promote: bool = False, progress: ProgressFn = no_progress
) -> TrainResult:
    """``sentops train``: fine-tune, evaluate, log everything to MLflow, register, and with
    ``promote`` point ``serve.alias`` at the new version. ``registry`` defaults to the one
    the settings name. Under ``torchrun`` a rank > 0 only fine-tunes (see ``_fine_tune_as_worker``)."""
    from sentiment_ops.provenance import git_commit
    from sentiment_ops.tracking.client import check_reachable
    from sentiment_ops.tracking.registry import Registry

    cfg = settings.train
    if registry is None:
        check_reachable(settings.tracking_uri, settings.mlflow.timeout_s)  # fail before any work
    data = load_train_data(cfg, progress)
    if distributed_rank() > 0:  # torchrun / accelerate launch: rank 0 alone logs and registers
        return _fine_tune_as_worker(settings, data)
    registry = registry or Registry(settings, check=False)
    model, base_path = new_model(settings)
    commit = git_commit()
    splits = logged_splits(data)
    with tracked_run(registry, f"train-{data.corpus.name}", _tags(cfg, data, commit)) as run:
        run.log_params(_params(settings, data, base_path, commit))
        run.log_datasets(list({id(s): s for s in splits.values()}.values()))
        opts = FitOptions.from_train_settings(cfg)
        seconds = fine_tune(model, data.train, data.val, opts, progress=progress, on_metrics=run.log_metrics)
        metrics = {
            "train_seconds": seconds,
            "train_samples_per_second": len(data.train) * cfg.epochs / max(seconds, 1e-9),
        }
        metrics.update(_evaluate(model, data, cfg.eval_batch_size, run, progress))
        info = lifecycle.log_model(registry, run, settings, model, {"data": cfg.data, "run_id": run.run_id}, progress)
        lifecycle.log_model_metrics(run, info.model_id, metrics, splits)
        lifecycle.attach_reference(settings, registry, run.run_id, model, progress)
    version = None
    if cfg.register_model:
        description = version_description(cfg, data, metrics)
        version = registry.register(run.run_id, source=info.model_uri, description=description).version
    promoted = registry.promote(version) if promote and version is not None else None
    return TrainResult(run.run_id, info.model_uri, version, metrics, seconds, data.corpus.describe(), promoted)


def _fine_tune_as_worker(settings: Settings, data: TrainData) -> TrainResult:
    """A rank > 0 of a multi-process launch: the same data and the same seeded model as
    rank 0, and its share of the distributed fine-tuning (the HF Trainer shards the batches).
    Rank 0 alone evaluates, logs to MLflow and registers, so one launch = one run, one version.
    Returns a result with an empty ``run_id``."""
    model, _ = new_model(settings)
    seconds = fine_tune(model, data.train, data.val, FitOptions.from_train_settings(settings.train))
    return TrainResult(
        run_id="", model_uri="", version=None, metrics={}, train_seconds=seconds, data=data.corpus.describe()
    )
