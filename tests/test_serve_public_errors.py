"""What a failure shows to clients: what failed, in plain words; never the registry's or
the store's own error text, their host names or a password (those go to the log, masked).
Real uvicorn, tiny model; the store outage on a real PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from serve_support import Server, promote, serve_settings, start_server, wait_for

HOST = "localhost"  # the local services listen on 127.0.0.1: named here by a host name


def _bodies(c: Any) -> str:
    return " ".join(c.get(path).text for path in ("/ready", "/model")) + c.post("/predict", json={"text": "x"}).text


def test_an_unreachable_registry_is_named_not_described(
    isolated_home: Any, running: list[Server], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from serve_support import free_port

    uri = f"http://sentops:RegistryPw-77@{HOST}:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with caplog.at_level(logging.ERROR, logger="sentiment_ops"):
        srv = start_server(serve_settings(poll_interval_s=3600))
        running.append(srv)
        with srv.client() as c:
            ready = c.get("/ready")
            assert ready.status_code == 503 and "the model registry is unavailable" in ready.json()["detail"]
            bodies = _bodies(c)
    assert "RegistryPw-77" not in bodies and HOST not in bodies, bodies
    logged = caplog.text
    assert "cannot resolve alias" in logged and "RegistryPw-77" not in logged, logged


@pytest.mark.integration
def test_a_store_outage_shows_no_host_or_password(
    home_with_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from local_services import start_postgres

    cluster = start_postgres()  # our own: this test stops it
    try:
        url = cluster.create_database("outage").replace("@127.0.0.1:", f"@{HOST}:")
        promote(1)
        monkeypatch.setenv("SENTOPS_STORE__URL", url)
        monkeypatch.setenv("SENTOPS_FEEDBACK_TOKEN", "label-writer-3c1d")
        server = start_server(serve_settings())
        try:
            with server.client() as c, caplog.at_level(logging.ERROR, logger="sentiment_ops"):
                wait_for(lambda: c.get("/ready").status_code == 200, 60)
                pid = c.post("/predict", json={"text": "before"}).json()["id"]
                assert server.state.writer.flush(10)
                cluster.pause()
                assert c.post("/predict", json={"text": "during"}).status_code == 200  # queued
                wait_for(lambda: not server.state.writer.store_up, 30)
                ready = c.get("/ready")
                assert ready.status_code == 503
                assert ready.json()["detail"].startswith("inference store unavailable")
                feedback = c.post(
                    "/feedback", json={"id": pid, "label": 1}, headers={"Authorization": "Bearer label-writer-3c1d"}
                )
                assert feedback.status_code == 503 and feedback.json()["detail"] == (
                    "inference store unavailable; retry later"
                )
                bodies = _bodies(c) + feedback.text
                cluster.resume()
                wait_for(lambda: server.state.writer.store_up and server.state.writer.pending == 0, 30)
        finally:
            server.stop()
    finally:
        cluster.stop()
    # the driver names the server by its address: in the log, never in an answer
    assert cluster.password not in bodies and HOST not in bodies and "127.0.0.1" not in bodies, bodies
    assert 'connection to server at "127.0.0.1"' in caplog.text and cluster.password not in caplog.text
