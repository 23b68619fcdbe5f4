"""Request and response bodies of the HTTP API (separate from the store's rows).

Request models are built per app by ``request_models`` so that the configured limits
(``serve.max_text_chars``, ``serve.max_batch_items``) are enforced by validation *and*
published in the OpenAPI schema."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Body
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from sentiment_ops.labels import MAX_CLASSES, LabelSet
from sentiment_ops.store import text_problem


def check_text(value: str) -> str:
    """The API's text rule: not blank, and what the store can hold (``text_problem``)."""
    if not value.strip():
        raise ValueError("text is empty or only whitespace")
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# What ``text_problem`` refuses that a JSON Schema can say: C0 controls but tab, newline
# and carriage return, and DEL (published only: validation is ``check_text``'s).
NO_CONTROLS = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F]*$"


def text_rule(max_chars: int) -> str:
    return (
        f"1 to {max_chars} characters (serve.max_text_chars), not only whitespace, valid Unicode "
        "(no lone surrogate), and no control character other than tab, newline and carriage return."
    )


def _text_type(max_chars: int) -> Any:
    return Annotated[
        StrictStr,
        Field(
            min_length=1,
            max_length=max_chars,
            description=text_rule(max_chars),
            json_schema_extra={"pattern": NO_CONTROLS},
        ),
        AfterValidator(check_text),
    ]


def _invocations_body(max_chars: int, max_items: int) -> Any:
    """The /invocations body: checked by ``routes.invocation_texts``, described here."""
    return Annotated[
        dict[str, Any],
        Body(
            description=(
                'An MLflow scoring request, one of `{"dataframe_split": {"columns": ["text"], "data": '
                '[[text], ...]}}`, `{"dataframe_records": [{"text": text}, ...]}`, `{"inputs": [text, ...]}` '
                '(or `{"text": [...]}`, or objects with a `text` field) or the same under `instances`. '
                f"1 to {max_items} texts (serve.max_batch_items), each {text_rule(max_chars)} "
                "An empty body or object is refused."
            ),
            json_schema_extra={
                "minProperties": 1,
                "examples": [{"inputs": ["Loved it."]}],
            },
        ),
    ]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class RequestModels:
    predict: type[BaseModel]
    batch: type[BaseModel]
    invocations: Any  # the /invocations body parameter's annotation


def request_models(max_chars: int, max_items: int) -> RequestModels:
    text = _text_type(max_chars)

    class PredictRequest(_Body):
        text: text  # type: ignore[valid-type]

        model_config = ConfigDict(
            extra="forbid", json_schema_extra={"examples": [{"text": "A moving, beautifully acted film."}]}
        )

    class BatchPredictRequest(_Body):
        texts: list[text] = Field(  # type: ignore[valid-type]
            min_length=1, max_length=max_items, description=f"1 to {max_items} texts (serve.max_batch_items)."
        )

        model_config = ConfigDict(
            extra="forbid", json_schema_extra={"examples": [{"texts": ["Loved it.", "Dull and far too long."]}]}
        )

    return RequestModels(
        predict=PredictRequest, batch=BatchPredictRequest, invocations=_invocations_body(max_chars, max_items)
    )


FeedbackLabel = Annotated[
    Annotated[StrictInt, Field(ge=0, le=MAX_CLASSES - 1)] | Annotated[StrictStr, Field(min_length=1, max_length=200)],
    Field(
        description=(
            "The true label: a class name of the serving model (any case; `labels` of /model) or its "
            'index 0..k-1. A binary model: 0 or "negative", 1 or "positive".'
        )
    ),
]


class FeedbackRequest(_Body):
    id: StrictStr = Field(min_length=1, max_length=64, description="The id returned by /predict.")
    label: FeedbackLabel

    def label_index(self, classes: LabelSet) -> int | None:
        """The class index the label names among ``classes``; None when it is none of them."""
        if isinstance(self.label, int):
            return self.label if 0 <= self.label < classes.k else None
        word = self.label.strip().lower()
        return next((i for i, name in enumerate(classes.names) if name.lower() == word), None)


class ModelRef(BaseModel):
    name: str
    version: int
    alias: str


class PredictResponse(BaseModel):
    id: str = Field(description="Id of the logged prediction (use it in /feedback).")
    timestamp: datetime = Field(description="UTC, ISO-8601.")
    text: str
    prediction: int = Field(
        description="The class index, in the order of /model `labels` (a binary model: 0 = negative, 1 = positive)."
    )
    label: str = Field(description="The class name.")
    probabilities: dict[str, float] = Field(description="Every class's probability, by class name (they sum to 1).")
    confidence: float = Field(description="Probability of the predicted label.")
    probability: float | None = Field(
        description="Probability of the positive label for a negative/positive model; null for any other model."
    )
    model: ModelRef
    model_stage: str = Field(description="The alias the model was served under (the seed's field).")


class BatchPredictResponse(BaseModel):
    predictions: list[PredictResponse]


class FeedbackResponse(BaseModel):
    id: str
    label: int
    updated: bool = Field(description="False when this same label was already recorded.")


class ReloadError(BaseModel):
    version: int | None
    error: str
    at: datetime


class ModelInfoResponse(BaseModel):
    ready: bool
    name: str
    alias: str
    backend: str
    version: int | None = None
    labels: list[str] | None = Field(
        default=None, description="The class names of the served model, in index order (null when none is loaded)."
    )
    run_id: str | None = None
    source: str | None = None
    loaded_at: datetime | None = None
    last_reload_error: ReloadError | None = None


class ReloadResponse(BaseModel):
    changed: bool
    model: ModelInfoResponse


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    version: int | None = None
    detail: str | None = None


class ErrorResponse(BaseModel):
    detail: str


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: str = Field(description="What is wrong, in one line.")
    errors: list[FieldError] = Field(default_factory=list)


class InvocationsResponse(BaseModel):
    predictions: list[dict[str, Any]]
