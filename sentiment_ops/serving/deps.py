"""The request-scoped dependencies of the routes, as ``Annotated`` aliases: the app's parts
(``ServingState``, which ``create_app`` puts on ``app.state.sentops``), the request id, and
the bearer-token guards (``require_token``).

The dependencies are coroutines: FastAPI runs a plain ``def`` dependency in a worker
thread, two thread hops per request on the predict path."""

# No ``from __future__ import annotations``: FastAPI must see the real classes.

import os
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sentiment_ops.config import Settings
from sentiment_ops.serving.batcher import MicroBatcher
from sentiment_ops.serving.holder import ModelHolder
from sentiment_ops.serving.metrics import ServingMetrics
from sentiment_ops.serving.store_writer import StoreWriter
from sentiment_ops.store import InferenceStore


@dataclass(frozen=True)
class BearerToken:
    """A token the server may be given in its environment (``env``, also the OpenAPI
    security scheme's name); ``disabled``: the 403's detail when the server has none."""

    env: str
    description: str
    disabled: str = ""


PREDICT_TOKEN = BearerToken("SENTOPS_PREDICT_TOKEN", "Optional token for predictions.")
FEEDBACK_TOKEN = BearerToken(
    "SENTOPS_FEEDBACK_TOKEN",
    "The label-writer token: labels train the next model.",
    "label writes are disabled: set SENTOPS_FEEDBACK_TOKEN on the server "
    "and send it as `Authorization: Bearer <token>`",
)
LABEL_TOKEN = BearerToken(  # the same token as FEEDBACK_TOKEN, refused in the labeling page's words
    FEEDBACK_TOKEN.env, FEEDBACK_TOKEN.description, "labeling is disabled: set SENTOPS_FEEDBACK_TOKEN on the server"
)
ADMIN_TOKEN = BearerToken("SENTOPS_ADMIN_TOKEN", "The operator's token for /admin/reload.")


def read_tokens() -> dict[str, bytes]:
    """The tokens set (not empty) in the server's environment, by variable."""
    names = (PREDICT_TOKEN.env, FEEDBACK_TOKEN.env, ADMIN_TOKEN.env)
    return {name: os.environ[name].encode() for name in names if os.environ.get(name)}


@dataclass
class ServingState:
    settings: Settings
    holder: ModelHolder
    batcher: MicroBatcher
    writer: StoreWriter
    metrics: ServingMetrics
    store: InferenceStore | None = None
    tokens: dict[str, bytes] = field(default_factory=dict)  # read_tokens(), at create_app


async def get_state(request: Request) -> ServingState:
    return request.app.state.sentops


State = Annotated[ServingState, Depends(get_state)]


async def get_settings(state: State) -> Settings:
    return state.settings


async def get_holder(state: State) -> ModelHolder:
    return state.holder


async def get_batcher(state: State) -> MicroBatcher:
    return state.batcher


async def get_writer(state: State) -> StoreWriter:
    return state.writer


async def get_metrics(state: State) -> ServingMetrics:
    return state.metrics


async def get_store(state: State) -> InferenceStore:
    """The store the app opened at startup (the routes run only after it)."""
    assert state.store is not None
    return state.store


async def get_request_id(request: Request) -> str | None:
    """This request's id (``RequestIdMiddleware``: the client's X-Request-Id or a new one)."""
    return getattr(request.state, "request_id", None)


AppSettings = Annotated[Settings, Depends(get_settings)]
Holder = Annotated[ModelHolder, Depends(get_holder)]
Batcher = Annotated[MicroBatcher, Depends(get_batcher)]
Writer = Annotated[StoreWriter, Depends(get_writer)]
Metrics = Annotated[ServingMetrics, Depends(get_metrics)]
Store = Annotated[InferenceStore, Depends(get_store)]
RequestId = Annotated[str | None, Depends(get_request_id)]


def require_token(token: BearerToken) -> Any:
    """A dependency that admits ``Authorization: Bearer <token>`` (compared in constant
    time) and answers 401 otherwise; when the server has no such token it refuses everyone
    (403, ``token.disabled``). The scheme shows in the OpenAPI document."""
    scheme = HTTPBearer(scheme_name=token.env, description=token.description, auto_error=False)

    async def guard(
        state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(scheme)]
    ) -> None:
        expected = state.tokens.get(token.env)
        if expected is None:
            raise HTTPException(403, token.disabled)
        given = credentials.credentials.encode() if credentials is not None else b""
        if not secrets.compare_digest(given, expected):
            raise HTTPException(
                401, f"a valid bearer token is required ({token.env})", headers={"WWW-Authenticate": "Bearer"}
            )

    return Depends(guard)


PredictAuth = require_token(PREDICT_TOKEN)
FeedbackAuth = require_token(FEEDBACK_TOKEN)
LabelAuth = require_token(LABEL_TOKEN)
AdminAuth = require_token(ADMIN_TOKEN)
