"""``score_file``: a file of texts → a Parquet file of predictions, on one machine.

Reading (``reader``: bounded chunks, bad rows with their lines), the forward passes (an
``engine.Engine``: worker processes by default), the partial output and resuming
(``partial.PartialRun``), what the output may replace (``guard``) and logging to the
inference store (``--log``, ``source='batch'``, read by ``sentops drift --source batch``) are
separate; this module strings them together.

Output columns: ``row`` (the data row number in the input, 1-based, header not counted),
``label`` (class index), ``label_name``, ``probability`` (of positive: binary models only),
``confidence`` (of the label), one probability column per class (``p_negative``, ...:
``inference.passes.probability_columns``), and with ``embedding=True`` the mean-pooled
``embedding``. Bad rows are not in
the output; ``ScoreSummary`` counts them and keeps the first ``MAX_ERRORS_KEPT``."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sentiment_ops.config import Backend, Settings
from sentiment_ops.errors import ConfigError, DataError, ModelLoadError
from sentiment_ops.inference.passes import Prediction, probability_columns
from sentiment_ops.labels import BINARY, LabelSet
from sentiment_ops.scoring import guard
from sentiment_ops.scoring.engine import Engine, InProcessEngine, OnnxFiles, ProcessEngine
from sentiment_ops.scoring.partial import PartialRun, fingerprint
from sentiment_ops.scoring.reader import Chunk, input_kind, input_size, read_chunks
from sentiment_ops.store import InferenceStore, PredictionRecord, using_store
from sentiment_ops.tracking.artifacts import download_logged
from sentiment_ops.tracking.predictors import exported_predictor, resolve_version
from sentiment_ops.tracking.registry import Registry, VersionInfo

CHUNK_ROWS = 16_384  # rows per chunk: the unit of memory, of the output's parts and of resuming
# Texts per engine batch, at most. A chunk is sorted by length before it is cut into batches,
# so each batch holds texts of about one length and its passes (grouped by token length
# within the batch, ``serve.batch_max_tokens`` each) carry little padding. With several
# workers a small chunk (the last one) is cut finer, so that no worker waits for another.
BATCH_TEXTS = 512
BATCHES_PER_WORKER = 4  # of a small chunk
MAX_ERRORS_KEPT = 1_000  # bad rows listed in the summary (all are counted)
SOURCE = "batch"  # the store's ``source`` of logged rows (``sentops drift --source batch``)


@dataclass
class ScoreJob:
    """What ``sentops score`` is asked to do, whichever engine runs it. The model is
    ``version``, else the one ``serve.alias`` points to."""

    input: str | Path
    output: str | Path
    text_column: str = "text"
    version: int | None = None
    embedding: bool = False  # also write each text's embedding
    overwrite: bool = False  # replace an output that sentops score did not write (never the input)
    backend: str | None = None  # None: serve.backend locally, torch on Spark
    log: bool = False  # the local engine only: also log the predictions to the inference store
    workers: int | None = None  # the local engine only: worker processes (None: one per core)


def check_backend(backend: str | None) -> None:
    """ConfigError for a backend that is not one of ``serve.backend``'s."""
    if backend is not None and backend not in set(Backend):
        raise ConfigError(f"unknown backend {backend!r} ({' | '.join(Backend)})")


@dataclass
class ScoreProgress:
    rows: int  # data rows read, good and bad (resumed ones included)
    scored: int  # rows scored by this run
    bad: int
    position: int  # of ``total``: bytes (CSV, JSONL) or rows (Parquet)
    total: int


@dataclass
class ScoreSummary:
    input: str
    output: str
    model_name: str
    model_version: int
    alias: str | None
    backend: str
    workers: int
    rows: int = 0  # data rows of the input, good and bad
    scored: int = 0  # rows in the output
    bad: int = 0
    resumed_rows: int = 0  # data rows a previous run had already done
    logged: int = 0  # rows written to the inference store (--log)
    seconds: float = 0.0
    texts_per_s: float = 0.0  # rows scored by this run per second of this run
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"line", "message"}, the first MAX_ERRORS_KEPT
    engine: str = "local"  # local, or spark (--spark: ``line`` is then the row in Spark's read order)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def raise_for_errors(self) -> None:
        """``BadScoreRowsError`` (exit 65) when some rows were bad; the output holds the others."""
        if self.bad:
            raise BadScoreRowsError(self)


class BadScoreRowsError(DataError):
    """Some rows of the input could not be scored; the output holds the good ones."""

    def __init__(self, summary: ScoreSummary) -> None:
        self.summary = summary
        super().__init__(
            f"{summary.bad} bad row(s) in {summary.input}; the {summary.scored} good ones are in {summary.output}"
        )


def output_schema(dim: int | None, classes: LabelSet = BINARY) -> pa.Schema:
    """The output's columns for a model over ``classes``: ``probability`` (P of positive)
    for a binary model only, then one probability column per class (``probability_columns``)."""
    fields = [pa.field("row", pa.int64()), pa.field("label", pa.int64()), pa.field("label_name", pa.string())]
    if classes.is_binary:
        fields.append(pa.field("probability", pa.float64()))
    fields.append(pa.field("confidence", pa.float64()))
    fields.extend(pa.field(name, pa.float64()) for name in probability_columns(classes))
    if dim is not None:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), dim)))
    return pa.schema(fields)


def _table(rows: list[int], pred: Prediction, embedding: bool, classes: LabelSet) -> pa.Table:
    if pred.classes != classes:
        raise ModelLoadError(f"the model predicts {pred.classes}, its version says {classes}")
    columns: dict[str, Any] = {
        "row": pa.array(rows, pa.int64()),
        "label": pa.array(pred.labels, pa.int64()),
        "label_name": pa.array(pred.label_names, pa.string()),
    }
    if pred.positive is not None:
        columns["probability"] = pa.array(pred.positive, pa.float64())
    columns["confidence"] = pa.array(pred.confidences, pa.float64())
    probs = np.asarray(pred.probabilities, np.float64).reshape(len(rows), classes.k)
    for i, name in enumerate(probability_columns(classes)):
        columns[name] = pa.array(probs[:, i], pa.float64())
    dim = None
    if embedding:
        emb = np.ascontiguousarray(pred.embeddings if pred.embeddings is not None else np.zeros((len(rows), 0)))
        dim = int(emb.shape[1])
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim)
    return pa.table(columns, schema=output_schema(dim, classes))


def batch_size(texts: int, workers: int) -> int:
    if workers <= 1:
        return BATCH_TEXTS
    return max(16, min(BATCH_TEXTS, -(-texts // (workers * BATCHES_PER_WORKER))))


@dataclass
class _Pending:
    """A chunk whose batches are with the engine: its length order and the results so far."""

    chunk: Chunk
    order: np.ndarray  # chunk positions, shortest text first: the order of the batches
    batches_left: int
    preds: list[Prediction] = field(default_factory=list)

    def prediction(self, classes: LabelSet) -> Prediction:
        """The results put back in the chunk's order."""
        return _concat(self.preds, classes).take(np.argsort(self.order))


def _concat(preds: list[Prediction], classes: LabelSet) -> Prediction:
    if not preds:
        return Prediction.empty(classes)
    embs = [p.embeddings for p in preds if p.embeddings is not None and len(p.labels)]
    return Prediction(
        labels=np.concatenate([p.labels for p in preds]),
        probabilities=np.concatenate([p.probabilities for p in preds]),
        embeddings=np.concatenate(embs) if embs else None,
        classes=preds[0].classes,
    )


def open_engine(
    registry: Registry, info: VersionInfo, settings: Settings, backend: str, workers: int, tmp: Path
) -> Engine:
    """The local engine: ``workers`` processes on the logged int8 graph, or one predictor
    in this process (torch, a version logged without its graph, or one worker)."""
    cores = os.cpu_count() or 1
    max_tokens, max_length = settings.serve.batch_max_tokens, settings.serve.max_length
    if backend == "onnx":
        found = download_logged(registry.download_uri(info.version), tmp)
        if found is not None:
            threads = max(1, cores // workers)
            files = OnnxFiles(found[0], found[1], max_length, threads)
            return (
                ProcessEngine(files, workers, max_tokens) if workers > 1 else InProcessEngine(files.build(), max_tokens)
            )
    predictor = exported_predictor(
        registry, info, backend, threads=cores, torch_threads=cores, max_length=max_length, home=settings.home
    )
    return InProcessEngine(predictor, max_tokens, backend)


ProgressFn = Callable[[ScoreProgress], None]


def score_file(
    settings: Settings,
    job: ScoreJob,
    *,
    chunk_rows: int = CHUNK_ROWS,
    registry: Registry | None = None,
    engine: Engine | None = None,
    store: InferenceStore | None = None,
    progress: ProgressFn | None = None,
) -> ScoreSummary:
    """Score every row of ``job.input`` (CSV, JSONL, Parquet) with a model version
    (``job.version``, or the one ``serve.alias`` points to) into the Parquet file
    ``job.output``, which appears only when complete. A rerun after an interruption
    resumes after the last finished chunk. The output is never the input, and replaces only
    an output of ``sentops score`` unless ``job.overwrite`` (``guard``). ``job.log``: the
    predictions (with their embeddings) also go to the inference store as ``source='batch'``
    rows, in ``store`` (default: ``settings.store_url``, opened and closed here). ``engine``
    (default: the local one, ``open_engine``) runs the forward passes.

    Raises DataError (unreadable input), NotFoundError, ModelLoadError, ConfigError (an
    unknown backend; its subclass guard.OutputRefusedError: the output is the input, or
    something else is in its way); bad rows do not raise: see ``ScoreSummary.raise_for_errors``."""
    input_path, output, kind = _checked_paths(job)
    registry = registry or Registry(settings)
    info = resolve_version(registry, job.version, settings.serve.alias)
    backend = job.backend or (engine.backend if engine is not None else settings.serve.backend)
    key = {"input": fingerprint(input_path), "model": info.name, "version": info.version, "backend": backend}
    key.update(text_column=job.text_column, embedding=job.embedding, log=job.log)
    run = PartialRun(output, key)
    run.open()
    who = None if job.version is not None else settings.serve.alias
    summary = ScoreSummary(str(input_path), str(output), info.name, info.version, who, backend, workers=0)
    summary.resumed_rows, summary.errors = run.last_row, list(run.state["errors"])
    counts = {"rows": run.last_row, "scored": 0, "bad": 0, "logged": 0, "dim": None, **run.state["counts"]}
    start = time.perf_counter()
    with contextlib.ExitStack() as closing, tempfile.TemporaryDirectory(prefix="sentops-score-") as tmp:
        log_to = closing.enter_context(using_store(settings, store)) if job.log else None
        sink = _ChunkSink(run, summary, counts, job.embedding, log_to, progress, input_size(input_path, kind))
        sink.classes = LabelSet(tuple(info.classes))
        chunks = read_chunks(input_path, job.text_column, chunk_rows, skip_rows=run.last_row)
        own_engine = engine is None
        workers = job.workers or os.cpu_count() or 1
        engine = engine or open_engine(registry, info, settings, backend, workers, Path(tmp))
        summary.workers = engine.workers
        try:
            scored_now = sink.consume(engine, chunks)
        except BrokenProcessPool as exc:
            raise ModelLoadError(f"a scoring worker died ({exc}): see its error above") from exc
        finally:
            if own_engine:
                engine.close()
    schema = output_schema(counts["dim"] if job.embedding else None, sink.classes)
    run.finish(schema, guard.stamp(info.name, info.version), job.overwrite)
    _totals(summary, counts, scored_now, time.perf_counter() - start)
    return summary


def _totals(summary: ScoreSummary, counts: dict[str, Any], scored_now: int, seconds: float) -> None:
    summary.rows, summary.scored, summary.bad, summary.logged = (counts[k] for k in ("rows", "scored", "bad", "logged"))
    summary.seconds = seconds
    summary.texts_per_s = scored_now / seconds if seconds > 0 else 0.0


def _checked_paths(job: ScoreJob) -> tuple[Path, Path, str]:
    """The input, the output and the input's kind, once the job may write the output."""
    input_path, output = Path(job.input), Path(job.output)
    kind = input_kind(input_path)
    check_backend(job.backend)
    if output.suffix.lower() != ".parquet":
        raise DataError(f"{output}: the output is Parquet; name it .parquet")
    guard.check_output(input_path, output, job.overwrite)
    # the parts' folder beside it is ours to empty (PartialRun refuses a stranger's): only the input is checked
    guard.check_output(input_path, output.with_name(output.name + ".partial"), overwrite=True)
    return input_path, output, kind


class _ChunkSink:
    """Predictions back to their chunks, in order; each finished chunk is logged (with
    ``store``), written as a part and counted in the state."""

    def __init__(
        self,
        run: PartialRun,
        summary: ScoreSummary,
        counts: dict[str, Any],
        embedding: bool,
        store: InferenceStore | None,
        progress: ProgressFn | None,
        total: int,
    ) -> None:
        self.run, self.summary, self.counts = run, summary, counts
        self.embedding, self.store, self.progress, self.total = embedding, store, progress, total
        self.pending: deque[_Pending] = deque()
        self.classes = BINARY  # the model version's: the output's probability columns
        self.position = 0
        self.scored_now = 0
        self.workers = 1

    def _batches(self, chunks: Iterator[Chunk]) -> Iterator[list[str]]:
        for chunk in chunks:
            order = np.argsort(np.fromiter((len(t) for t in chunk.texts), np.int64, len(chunk.texts)), kind="stable")
            size = batch_size(len(order), self.workers)
            batches = [[chunk.texts[i] for i in order[j : j + size]] for j in range(0, len(order), size)]
            self.pending.append(_Pending(chunk, order, len(batches)))
            yield from batches

    def consume(self, engine: Engine, chunks: Iterator[Chunk]) -> int:
        self.workers = engine.workers
        for pred in engine.predict(self._batches(chunks)):
            self._flush()
            head = self.pending[0]
            head.preds.append(pred)
            head.batches_left -= 1
            self.scored_now += len(pred.labels)
            self._report(head.chunk, sum(len(p.labels) for p in head.preds))
            self._flush()
        self._flush()
        return self.scored_now

    def _report(self, chunk: Chunk, done: int) -> None:
        if self.progress is None:
            return
        share = done / len(chunk.texts) if chunk.texts else 1.0
        position = self.position + int((chunk.position - self.position) * share)
        c = self.counts
        rows = c["rows"] + int((chunk.last_row - c["rows"]) * share)
        self.progress(ScoreProgress(rows, self.scored_now, c["bad"], position, self.total))

    def _flush(self) -> None:
        while self.pending and self.pending[0].batches_left == 0:
            done = self.pending.popleft()
            self._finish(done.chunk, done.prediction(self.classes))

    def _finish(self, chunk: Chunk, pred: Prediction) -> None:
        c = self.counts
        if self.store is not None and chunk.texts:
            c["logged"] += self._log(chunk, pred)
        if self.embedding and pred.embeddings is not None and c["dim"] is None:
            c["dim"] = int(pred.embeddings.shape[1])
        c["rows"], c["scored"], c["bad"] = chunk.last_row, c["scored"] + len(chunk.texts), c["bad"] + len(chunk.errors)
        room = MAX_ERRORS_KEPT - len(self.summary.errors)
        self.summary.errors.extend({"line": e.line, "message": e.message} for e in chunk.errors[: max(0, room)])
        if chunk.texts:
            table = _table(chunk.rows, pred, self.embedding, self.classes)
        else:  # every row of the chunk was bad: an empty part keeps the state's count of parts simple
            table = output_schema(c["dim"] if self.embedding else None, self.classes).empty_table()
        self.run.add(table, chunk.last_row, dict(c), self.summary.errors)
        self.position = chunk.position
        if self.progress is not None:
            self.progress(ScoreProgress(c["rows"], self.scored_now, c["bad"], chunk.position, self.total))

    def _log(self, chunk: Chunk, pred: Prediction) -> int:
        """The chunk's predictions as ``source='batch'`` rows. Ids are derived from the run's
        key and the row number, so a chunk logged again after a crash is not logged twice."""
        assert self.store is not None
        s = self.summary
        namespace = uuid.uuid5(uuid.NAMESPACE_URL, repr(sorted(self.run.key.items())))
        records = [
            PredictionRecord(
                model_name=s.model_name,
                model_version=s.model_version,
                text=text,
                prediction=int(pred.labels[i]),
                probability=None if pred.positive is None else float(pred.positive[i]),
                confidence=float(pred.confidences[i]),
                embedding=None if pred.embeddings is None else pred.embeddings[i],
                alias=s.alias,
                source=SOURCE,
                backend=s.backend,
                id=uuid.uuid5(namespace, str(row)).hex,
            )
            for i, (row, text) in enumerate(zip(chunk.rows, chunk.texts, strict=True))
        ]
        self.store.add_predictions(records, skip_existing=True)
        return len(records)
