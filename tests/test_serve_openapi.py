"""The OpenAPI document says what the server does: every error a route answers is declared
for that route, and its body validates against the declared schema (``{"detail": str}``, a
422 adds ``errors``); the limits the server enforces on inputs are in the schema. A real
uvicorn with the tiny model: bad requests on every route, answers checked against
/openapi.json."""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

import httpx
import jsonschema
import pytest
from serve_support import Server, promote, serve_settings, start_server

FEEDBACK = "label-writer-5b1e"
ADMIN = "admin-3c9d"
PREDICT = "predict-77a0"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _check(doc: dict[str, Any], method: str, path: str, r: httpx.Response, answered: list[tuple[str, int]]) -> None:
    """``r``'s status is declared for the route and its body validates against the schema."""
    declared = doc["paths"][path][method]["responses"]
    assert str(r.status_code) in declared, (method, path, r.status_code, sorted(declared))
    schema = declared[str(r.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(r.json(), {**schema, "components": doc["components"]})
    answered.append((path, r.status_code))


def _head_too_large(server: Server) -> tuple[int, dict[str, Any]]:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_every_error_answer_is_declared_with_its_schema(
    home_with_model: dict[str, Any], running: list[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, token in (("FEEDBACK", FEEDBACK), ("ADMIN", ADMIN), ("PREDICT", PREDICT)):
        monkeypatch.setenv(f"SENTOPS_{name}_TOKEN", token)
    srv = start_server(serve_settings())  # no version behind the alias yet: 503s first
    running.append(srv)
    answered: list[tuple[str, int]] = []
    with srv.client() as c:
        doc = c.get("/openapi.json").json()
        assert "HTTPValidationError" not in doc["components"]["schemas"], "a 422 the server never sends"
        p, f = _bearer(PREDICT), _bearer(FEEDBACK)

        _check(doc, "post", "/predict", c.post("/predict", json={"text": "Fine."}, headers=p), answered)  # 503
        _check(doc, "get", "/label/queue", c.get("/label/queue", headers=f), answered)  # 503
        promote(1)
        r = c.post("/admin/reload", headers=_bearer(ADMIN))
        assert r.status_code == 200, r.text
        _check(doc, "post", "/admin/reload", c.post("/admin/reload", headers=p), answered)  # 401

        for path, good, bad in (
            ("/predict", {"text": "Fine."}, {"text": "bell\x07"}),
            ("/predict/batch", {"texts": ["Fine."]}, {"texts": []}),
            ("/invocations", {"inputs": ["Fine."]}, {}),
        ):
            assert c.post(path, json=good, headers=p).status_code == 200
            _check(doc, "post", path, c.post(path, json=bad, headers=p), answered)  # 422
            _check(doc, "post", path, c.post(path, json=good), answered)  # 401
            not_utf8 = {**p, "Content-Type": "application/json"}
            _check(doc, "post", path, c.post(path, content=b'{"text": "\xff"}', headers=not_utf8), answered)  # 400
        big = {"text": "a" * 400_000}
        _check(doc, "post", "/predict", c.post("/predict", json=big, headers=p), answered)  # 413

        _check(doc, "post", "/feedback", c.post("/feedback", json={"id": "nope", "label": 1}, headers=f), answered)
        _check(doc, "post", "/feedback", c.post("/feedback", json={"id": "x", "label": 7}, headers=f), answered)
        _check(doc, "post", "/feedback", c.post("/feedback", json={"id": "x", "label": 1}), answered)
        _check(doc, "get", "/label/queue", c.get("/label/queue", params={"n": 0}, headers=f), answered)
        _check(doc, "get", "/label/queue", c.get("/label/queue", params={"select": "novel"}, headers=f), answered)
        _check(doc, "post", "/label/undo", c.post("/label/undo", json={"id": "nope"}, headers=f), answered)
        _check(doc, "post", "/label/undo", c.post("/label/undo", json={}, headers=f), answered)

    status, body = _head_too_large(srv)
    assert status == 431
    jsonschema.validate(
        body,
        {
            **doc["paths"]["/health"]["get"]["responses"]["431"]["content"]["application/json"]["schema"],
            "components": doc["components"],
        },
    )

    statuses = {status for _, status in answered}
    assert statuses == {400, 401, 404, 413, 422, 503}, sorted(answered)


def test_the_input_limits_are_in_the_schema(home_with_model: dict[str, Any], running: list[Server]) -> None:
    """A generated client meets no undocumented refusal: text length, batch size, control
    characters and the /invocations body's shapes are in the schema."""
    srv = start_server(serve_settings(max_text_chars=300, max_batch_items=7))
    running.append(srv)
    with srv.client() as c:
        doc = c.get("/openapi.json").json()
        schemas = doc["components"]["schemas"]
        text = schemas["PredictRequest"]["properties"]["text"]
        assert (text["minLength"], text["maxLength"]) == (1, 300)
        assert "control character" in text["description"]
        pattern = text["pattern"]
        validator = jsonschema.Draft202012Validator(text)
        assert validator.is_valid("tab\tnewline\ncr\r fine")
        for bad in ("nul\x00", "bell\x07", "esc\x1b", "del\x7f"):
            assert not validator.is_valid(bad), (bad, pattern)
            assert c.post("/predict", json={"text": bad}).status_code == 422
        assert schemas["BatchPredictRequest"]["properties"]["texts"]["maxItems"] == 7

        body = doc["paths"]["/invocations"]["post"]["requestBody"]
        assert body["required"] is True
        described = body["content"]["application/json"]["schema"]
        assert described["minProperties"] == 1
        assert "1 to 7 texts" in described["description"] and "1 to 300 characters" in described["description"]
        assert c.post("/invocations", json={}).status_code == 422
        assert c.post("/invocations", json={"inputs": ["x" * 301]}).status_code == 422
        assert c.post("/invocations", json={"inputs": ["x"] * 8}).status_code == 422

        for path, methods in doc["paths"].items():
            for method, operation in methods.items():
                for status in ("408", "431", "500"):
                    assert status in operation["responses"], (method, path, status)
