"""Who may write labels and who may predict: POST /feedback needs its own bearer token
(labels train the next model and form the gate's new-domain hold-out); the predict routes
are open unless SENTOPS_PREDICT_TOKEN is set. Real uvicorn, tiny model."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from serve_support import Server, promote, serve_settings, start_server

FEEDBACK = "label-writer-7f3a"
ADMIN = "admin-91c2"
PREDICT = "predict-0d4e"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _predict_all(c: httpx.Client, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    return [
        c.post("/predict", json={"text": "A fine film."}, headers=headers),
        c.post("/predict/batch", json={"texts": ["Great.", "Awful."]}, headers=headers),
        c.post("/invocations", json={"inputs": ["Great."]}, headers=headers),
    ]


def test_label_writes_are_refused_without_a_configured_token(
    home_with_model: dict[str, Any], running: list[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secure by default: no SENTOPS_FEEDBACK_TOKEN on the server, no label writes at all."""
    monkeypatch.setenv("SENTOPS_ADMIN_TOKEN", ADMIN)
    promote(1)
    srv = start_server(serve_settings())
    running.append(srv)
    with srv.client() as c:
        assert [r.status_code for r in _predict_all(c)] == [200, 200, 200]  # predict is open by default
        pid = c.post("/predict", json={"text": "Fine."}).json()["id"]
        for headers in (None, _bearer(ADMIN), _bearer("anything")):
            r = c.post("/feedback", json={"id": pid, "label": 1}, headers=headers)
            assert r.status_code == 403, r.text
            assert "SENTOPS_FEEDBACK_TOKEN" in r.json()["detail"]
        srv.state.writer.flush()
        assert srv.state.store.get(pid).feedback_label is None
        schema = c.get("/openapi.json").json()
        assert "security" not in schema["paths"]["/predict"]["post"]
        assert schema["paths"]["/feedback"]["post"]["security"] == [{"SENTOPS_FEEDBACK_TOKEN": []}]


def test_feedback_needs_its_own_token_and_predict_the_optional_one(
    home_with_model: dict[str, Any], running: list[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTOPS_FEEDBACK_TOKEN", FEEDBACK)
    monkeypatch.setenv("SENTOPS_ADMIN_TOKEN", ADMIN)
    monkeypatch.setenv("SENTOPS_PREDICT_TOKEN", PREDICT)
    promote(1)
    srv = start_server(serve_settings())
    running.append(srv)
    with srv.client() as c:
        for headers in (None, _bearer("wrong"), _bearer(ADMIN), _bearer(FEEDBACK), {"Authorization": PREDICT}):
            for r in _predict_all(c, headers):
                assert r.status_code == 401, (headers, r.text)
                assert r.headers["WWW-Authenticate"] == "Bearer"
        answers = _predict_all(c, _bearer(PREDICT))
        assert [r.status_code for r in answers] == [200, 200, 200]
        pid = answers[0].json()["id"]

        for headers in (
            None,
            _bearer("wrong"),
            _bearer(ADMIN),  # the admin token is not a label-writer token
            _bearer(PREDICT),
            _bearer(FEEDBACK + "x"),
            {"Authorization": f"Basic {FEEDBACK}"},
        ):
            r = c.post("/feedback", json={"id": pid, "label": 0}, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert r.json()["detail"].startswith("a valid bearer token is required")
        srv.state.writer.flush()
        assert srv.state.store.get(pid).feedback_label is None  # nothing was written
        r = c.post("/feedback", json={"id": pid, "label": 0}, headers=_bearer(FEEDBACK))
        assert r.status_code == 200, r.text
        assert srv.state.store.get(pid).feedback_label == 0

        assert c.get("/health").status_code == 200  # ops endpoints stay open
        schema = c.get("/openapi.json").json()
        schemes = schema["components"]["securitySchemes"]
        assert schemes["SENTOPS_FEEDBACK_TOKEN"]["scheme"] == "bearer"
        assert schemes["SENTOPS_PREDICT_TOKEN"]["scheme"] == "bearer"
        for path in ("/predict", "/predict/batch", "/invocations"):
            assert schema["paths"][path]["post"]["security"] == [{"SENTOPS_PREDICT_TOKEN": []}]
            assert "401" in schema["paths"][path]["post"]["responses"]
        assert {"401", "403"} <= set(schema["paths"]["/feedback"]["post"]["responses"])


def test_require_predict_token_refuses_to_start_without_it(
    home_with_model: dict[str, Any], running: list[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deploy files set serve.require_predict_token: a server without the token does not
    start (one line, exit 2), so /predict is never open by accident."""
    from typer.testing import CliRunner

    from sentiment_ops.cli.main import app as cli
    from sentiment_ops.errors import ConfigError
    from sentiment_ops.serving import create_app

    promote(1)
    with pytest.raises(ConfigError, match="SENTOPS_PREDICT_TOKEN is not set"):
        create_app(serve_settings(require_predict_token=True))
    monkeypatch.setenv("SENTOPS_SERVE__REQUIRE_PREDICT_TOKEN", "true")
    for workers in ("1", "2"):
        result = CliRunner().invoke(cli, ["serve", "--port", "1", "--workers", workers])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "SENTOPS_PREDICT_TOKEN is not set" in lines[0], result.output

    monkeypatch.setenv("SENTOPS_PREDICT_TOKEN", PREDICT)
    srv = start_server(serve_settings(require_predict_token=True))
    running.append(srv)
    with srv.client() as c:
        assert [r.status_code for r in _predict_all(c)] == [401, 401, 401]
        assert [r.status_code for r in _predict_all(c, _bearer(PREDICT))] == [200, 200, 200]
