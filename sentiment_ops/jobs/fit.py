"""Fine-tuning with the Hugging Face ``Trainer``: the options, length-bucketed batches,
bf16 where the hardware has it, and the training metrics handed to a callback."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate.utils import extract_model_from_parallel
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback

from sentiment_ops.config import Settings, TrainSettings
from sentiment_ops.data import Split
from sentiment_ops.evaluation import classification_metrics
from sentiment_ops.jobs.steps import ProgressFn, no_progress
from sentiment_ops.labels import BINARY, LabelSet
from sentiment_ops.modeling import (
    SentimentModel,
    choose_device,
    load_classifier,
    load_tokenizer,
    prediction_from_logits,
    resolve_base_model,
)


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
    def from_retrain_settings(cls, settings: Settings) -> FitOptions:
        """The options ``sentops retrain`` fine-tunes with: ``train`` overlaid by the
        ``retrain`` section (epochs, learning rate, length buckets)."""
        opts = cls.from_train_settings(settings.train)
        opts.epochs = settings.retrain.epochs
        opts.learning_rate = settings.retrain.learning_rate
        opts.length_buckets = settings.retrain.length_buckets
        return opts


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
    train_ds = _Dataset(model.encode(train.texts), train.labels)
    val_ds = _Dataset(model.encode(val.texts), val.labels) if val is not None and len(val) else None

    def compute(pred: Any) -> dict[str, float]:
        p = prediction_from_logits(np.asarray(pred.predictions), None, model.classes)
        return classification_metrics(np.asarray(pred.label_ids), p.probabilities, model.classes)

    with tempfile.TemporaryDirectory() as out:
        model.model.train()
        sampler = None
        if opts.length_buckets:
            sampler = _LengthBuckets([len(x) for x in train_ds.ids], opts.batch_size, opts.seed)
        trainer = _Trainer(
            sampler=sampler,
            model=model.model,
            args=_training_args(opts, out, device, use_bf16, validate=val_ds is not None),
            train_dataset=train_ds,
            eval_dataset=val_ds,
            data_collator=DataCollatorWithPadding(model.tokenizer),
            compute_metrics=compute,
            callbacks=[_Callback(progress, on_metrics or (lambda m, s: None))],
        )
        trainer.remove_callback(PrinterCallback)  # metrics go to MLflow, not stdout
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    # With bf16, accelerate left the module's forward under autocast: unwrap it, so that the
    # evaluation and the drift reference run in float32, as the saved model serves.
    model.model = extract_model_from_parallel(model.model, keep_fp32_wrapper=False)
    model.model.eval()
    model.device = str(next(model.model.parameters()).device)
    return seconds


def _training_args(opts: FitOptions, out: str, device: str, bf16: bool, *, validate: bool) -> TrainingArguments:
    return TrainingArguments(
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
        eval_strategy="epoch" if validate and opts.epochs > 1 else "no",
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        disable_tqdm=True,
        seed=opts.seed,
        use_cpu=device == "cpu",
        # bf16 autocast: on CUDA, and on CPUs with native bf16 (1.45x here, measured).
        bf16=bf16,
        dataloader_num_workers=0,
    )


def new_model(settings: Settings, classes: LabelSet = BINARY) -> tuple[SentimentModel, str]:
    """The base model with a classification head over ``classes`` (the training data's)."""
    cfg = settings.train
    path = resolve_base_model(cfg.base_model)
    set_seed(cfg.seed)  # the new classification head is initialised from this seed
    tok = load_tokenizer(path)
    clf = load_classifier(path, classes, new_head=True)
    return SentimentModel(clf, tok, cfg.max_length, cfg.head_tokens, classes=classes), path
