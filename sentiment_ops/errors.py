"""The one exception tree of sentiment_ops.

Library code raises these; the CLI maps each to one red line and an exit code
(see ``exit_code``). Nothing else should escape the library on expected failures.

    SentopsError                      exit 1   anything expected that went wrong
    ├── ConfigError                   exit 2   invalid setting, unknown key, bad YAML
    │   └── scoring.OutputRefusedError exit 2  score's output is its input, or in the way (--overwrite)
    ├── DataError                     exit 65  unreadable / empty / malformed dataset
    │   ├── feedback.BadRowsError     exit 65  bad rows in a feedback file (the good ones applied)
    │   └── scoring.BadScoreRowsError exit 65  bad rows in a file to score (the good ones written)
    ├── NotFoundError                 exit 66  unknown model version, run, alias, id
    ├── RegistryUnavailableError      exit 69  MLflow tracking / registry unreachable
    ├── StoreError                    exit 70  inference store failure
    │   ├── StoreUnavailableError     exit 70  the store cannot be reached (retry later)
    │   │   └── serving.store_writer.QueueFullError  the server's write-behind queue is full
    │   ├── StoreRowError             exit 70  the store refused a row (its data)
    │   └── StoreSchemaError          exit 70  the store's schema is not this version's
    ├── ModelLoadError                exit 71  a model version that cannot be loaded
    │   └── predictors.ModelRefusedError exit 71  refused by the backend (onnx: no logged int8 graph)
    ├── serving.batcher.ModelUnavailableError exit 1  the server has no model loaded (yet)
    ├── NotEnoughDataError            exit 4   too few rows / labels for the operation
    └── GateFailedError               exit 5   a candidate did not beat production

The server answers each with an HTTP status (``serving.http_errors``).

``sentops drift`` additionally exits 3 when drift is detected (not an error).
"""

from __future__ import annotations


class SentopsError(Exception):
    """Base class of every error that sentiment_ops raises on purpose. Its message is
    redacted when raised (``redaction.redact``): the errors quote URLs and third-party
    messages, and the CLI and the server show them."""

    exit_code: int = 1

    def __init__(self, *args: object) -> None:
        from sentiment_ops.redaction import redact

        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConfigError(SentopsError):
    """A setting is unknown, of the wrong type, or a config file cannot be read."""

    exit_code = 2


class DataError(SentopsError):
    """A dataset is missing, unreadable, empty or has a bad row."""

    exit_code = 65


class NotFoundError(SentopsError):
    """A model version, run, alias or logged prediction does not exist."""

    exit_code = 66


class RegistryUnavailableError(SentopsError):
    """The MLflow tracking server / model registry cannot be reached."""

    exit_code = 69


class StoreError(SentopsError):
    """The inference store cannot be opened or written."""

    exit_code = 70


class StoreUnavailableError(StoreError):
    """The store cannot be reached or failed as a whole (connection refused, lost, timed
    out, a missing table): the same write may succeed later."""


class StoreRowError(StoreError):
    """The store refused the data of a row (PostgreSQL DataError / IntegrityError): the same
    write fails again, so it is never retried as it is."""


class StoreSchemaError(StoreError):
    """The store's schema is older (``sentops db upgrade``) or newer than this sentops."""


class ModelLoadError(SentopsError):
    """A model version exists but cannot be loaded."""

    exit_code = 71


class NotEnoughDataError(SentopsError):
    """Too few rows (logged predictions, labels) for the operation asked for."""

    exit_code = 4


class GateFailedError(SentopsError):
    """A retrained candidate did not pass the champion/challenger gate."""

    exit_code = 5


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name when it has none): what a
    ``SentopsError`` quotes of the third-party error it wraps."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


EXIT_OK = 0
EXIT_DRIFT = 3
