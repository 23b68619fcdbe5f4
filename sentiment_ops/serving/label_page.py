"""The labeling page: ``GET /label`` serves one static page (``static/label.html``: plain
HTML and a little JavaScript, no build step) where a person labels served texts one at a
time, in the order a strategy chose them (``sentiment_ops.labeling``).

The page itself holds no data and is public; everything it reads or writes needs the
label-writer token (``SENTOPS_FEEDBACK_TOKEN``), which the page asks for and keeps in the
tab's ``sessionStorage``:

* ``GET /label/queue?select=mixed&n=50&seed=0``: the texts to label next, with the model's
  guess and confidence (``labeling.queue.choose_to_label`` over the served window), and the
  serving model's classes (``labels``): the page shows one button per class, keys 1..k
  (1..9: a tenth class on has its button only; a binary model also n and p);
* labels go through ``POST /feedback`` itself (the same handler and store call: a second
  label of the same text replaces the first, the same label twice writes nothing);
* ``POST /label/undo`` ``{"id"}``: the label of that prediction is removed (the row is
  unlabeled again, as served).

The page is served with a strict Content-Security-Policy: its one inline script and one
inline style run only by their SHA-256 (no ``'unsafe-inline'``), it may fetch from its own
origin only, submit no form anywhere (a form that posted the token would put it in a URL),
and no other site may frame it; no referrer leaves it (``page_headers``).
"""

# No ``from __future__ import annotations``: FastAPI must see the real classes.

import base64
import hashlib
import re
from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from sentiment_ops.labeling import Strategy
from sentiment_ops.labeling.queue import Selection, choose_to_label
from sentiment_ops.serving.deps import AppSettings, Holder, LabelAuth, Store, Writer
from sentiment_ops.serving.http_errors import BODY_ERRORS, responses
from sentiment_ops.serving.routes import no_model

MAX_QUEUE = 500  # texts one queue request may ask for
MAX_SEED = 2**32 - 1
E404 = "No reference embeddings for `novel` (sentops embed-reference)."
E503 = "No model is loaded yet, or the store or registry is unavailable."


class QueueItemResponse(BaseModel):
    id: str
    text: str
    prediction: int | None
    label: str | None = Field(description="The model's guess: a class name.")
    probability: float | None
    confidence: float | None
    score: float = Field(description="uncertain, mixed: |P(positive) - 0.5|; novel: distance to the reference.")
    cluster: int | None


class QueueResponse(BaseModel):
    strategy: Strategy
    seed: int
    model_name: str
    version: int
    window: int
    pool: int = Field(description="Unlabeled served texts chosen from.")
    labeled: int
    duplicates: int
    no_text: int
    no_embedding: int
    items: list[QueueItemResponse]
    labels: list[str] = Field(description="The serving model's classes, in index order: the page's answers.")


class UndoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64, description="The prediction whose label is removed.")


class UndoResponse(BaseModel):
    id: str
    cleared: bool = Field(description="False when the prediction held no label.")


@cache
def page_html() -> str:
    return resources.files("sentiment_ops.serving").joinpath("static/label.html").read_text(encoding="utf-8")


def _hashes(html: str, tag: str) -> str:
    """The CSP sources of the inline ``tag`` elements of ``html``: one SHA-256 each."""
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)


@cache
def page_headers() -> dict[str, str]:
    """The headers of the page (nosniff comes with every answer, ``RequestIdMiddleware``)."""
    html = page_html()
    policy = (
        f"default-src 'none'; script-src {_hashes(html, 'script')}; style-src {_hashes(html, 'style')}; "
        "connect-src 'self'; img-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP 2
        "Referrer-Policy": "no-referrer",
    }


def label_router() -> APIRouter:
    """/label (the page, public) and its data endpoints behind SENTOPS_FEEDBACK_TOKEN."""
    router = APIRouter(tags=["label"])
    guarded = [LabelAuth]

    @router.get("/label", response_class=HTMLResponse)
    async def label_page() -> HTMLResponse:
        """The labeling page (it asks for the label-writer token; its data calls need it)."""
        return HTMLResponse(page_html(), headers=page_headers())

    @router.get(
        "/label/queue",
        response_model=QueueResponse,
        dependencies=guarded,
        responses=responses(401, 403, 404, 422, 503, e404=E404, e503=E503),
    )
    async def label_queue(
        holder: Holder,
        writer: Writer,
        settings: AppSettings,
        store: Store,
        select: Strategy = Strategy.MIXED,
        n: Annotated[int, Query(ge=1, le=MAX_QUEUE)] = 50,
        seed: Annotated[int, Query(ge=0, le=MAX_SEED)] = 0,
    ) -> dict[str, Any]:
        """The unlabeled served texts to label next, chosen by `select` (see `sentops feedback export --select`)."""
        current = holder.current
        if current is None:
            raise no_model(holder, settings)
        await run_in_threadpool(writer.flush, 10.0)  # predictions still queued for the store
        selection = Selection(select, n, seed=seed, version=current.version)
        # the app's registry: no client and health probe per request
        queue = await run_in_threadpool(choose_to_label, settings, holder.registry, store, selection)
        return {**queue.to_dict(), "labels": list(current.classes.names)}

    @router.post(
        "/label/undo",
        response_model=UndoResponse,
        dependencies=guarded,
        responses=responses(*BODY_ERRORS, 401, 403, 404, 503, e503=E503),
    )
    async def label_undo(body: UndoRequest, store: Store) -> UndoResponse:
        """Remove the label of a logged prediction (the page's undo)."""
        cleared = await run_in_threadpool(store.clear_feedback, body.id)
        return UndoResponse(id=body.id, cleared=cleared)

    return router
