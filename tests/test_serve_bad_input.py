"""Bad input gets a 4xx with a message that says what is wrong, never a 5xx, and never
a logged row. The fuzz test sends the whole OpenAPI schema (schemathesis, positive and
negative data) to the running server and asserts that no request gets a 5xx. Every 200
prediction answer of the module goes into a ledger; the last test checks the store against
it: one row per answered prediction, with its text, and no other row."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import select
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from local_services import sql_rows
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance
from serve_support import Server, clean_env, promote, scrape, serve_settings, start_server

from sentiment_ops.serving.body_limit import body_limits
from sentiment_ops.serving.http_protocol import (
    MAX_HEAD_BYTES,
    HeadLimitProtocol,
    body_stalled,
    body_too_slow,
    head_too_slow,
    too_large_head,
)
from sentiment_ops.store import InferenceStore

MAX_CHARS = 300


@pytest.fixture(scope="module")
def server(trained_home: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (own home, version 1 in production, a small text limit)."""
    home = tmp_path_factory.mktemp("bad-input-home")
    shutil.copy(trained_home["home"] / "mlflow.db", home / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        clean_env(mp, home)
        mp.setenv("SENTOPS_ADMIN_TOKEN", "fuzz-token")
        mp.setenv("SENTOPS_FEEDBACK_TOKEN", "fuzz-token")  # one header for the fuzzer (tokens: test_serve_auth.py)
        promote(1)
        srv = start_server(
            serve_settings(max_text_chars=MAX_CHARS, max_batch_items=4, poll_interval_s=3600, backend="onnx")
        )
    yield srv
    srv.stop()


class Ledger:
    """Every successful prediction answer this module's server gave: the rows it must have
    logged, each exactly once. ``answered`` holds (id, text) of /predict and /predict/batch
    answers; /invocations answers carry no ids, so only their row count is known."""

    PATHS = ("/predict", "/predict/batch", "/invocations")

    def __init__(self) -> None:
        self.answered: list[tuple[str, str]] = []
        self.invocation_rows = 0

    def record(self, method: str, path: str, status: int, json_body: Callable[[], Any]) -> None:
        if method != "POST" or path not in self.PATHS or status != 200:
            return
        body = json_body()
        if path == "/predict":
            self.answered.append((body["id"], body["text"]))
        elif path == "/predict/batch":
            self.answered.extend((p["id"], p["text"]) for p in body["predictions"])
        else:
            self.invocation_rows += len(body["predictions"])

    def httpx_hook(self, response: httpx.Response) -> None:
        response.read()
        request = response.request
        self.record(request.method, request.url.path, response.status_code, response.json)

    @property
    def rows(self) -> int:
        return len(self.answered) + self.invocation_rows


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture()
def client(server: Server, ledger: Ledger) -> Iterator[httpx.Client]:
    with server.client(event_hooks={"response": [ledger.httpx_hook]}) as c:
        yield c


def _rows(server: Server) -> int:
    server.state.writer.flush()
    return InferenceStore(server.state.settings.store_url).count()


def _assert_422(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    for word in words:
        assert word in detail, (word, detail)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"text": ""}, ["text", "at least 1 character"]),
        ({"text": "   \n\t "}, ["text", "empty or only whitespace"]),
        ({"text": "x" * (MAX_CHARS + 1)}, ["text", f"at most {MAX_CHARS} characters"]),
        ({"text": 42}, ["text", "valid string"]),
        ({"text": None}, ["text", "valid string"]),
        ({"text": ["a"]}, ["text", "valid string"]),
        ({"text": True}, ["text", "valid string"]),
        ({}, ["text", "Field required"]),
        ({"text": "ok", "extra": 1}, ["extra", "not permitted"]),
        (["text"], ["valid dictionary"]),
        ("just a string", ["valid dictionary"]),
    ],
)
def test_predict_rejects(client: httpx.Client, server: Server, body: Any, words: list[str]) -> None:
    before = _rows(server)
    _assert_422(client.post("/predict", json=body), *words)
    assert _rows(server) == before


def test_text_at_the_limit_is_fine(client: httpx.Client) -> None:
    assert client.post("/predict", json={"text": "y" * MAX_CHARS}).status_code == 200


def test_invalid_json_and_encodings(client: httpx.Client, server: Server) -> None:
    before = _rows(server)
    headers = {"content-type": "application/json"}
    r = client.post("/predict", content=b'{"text": "unterminated', headers=headers)
    _assert_422(r, "body: request body is not valid JSON (Unterminated string starting at: character 9)")
    _assert_422(client.post("/predict", content=b"", headers=headers))
    r = client.post("/predict", content=b'{"text": "\xff\xfe"}', headers=headers)
    assert r.status_code == 400 and r.json()["detail"] == "request body is not UTF-8 (invalid start byte at byte 10)"
    r = client.post("/predict", content=b"[" * 5000 + b"]" * 5000, headers=headers)
    assert r.status_code == 400 and r.json()["detail"] == "request body is not valid JSON (nested too deeply)"
    # a lone surrogate is valid JSON but not valid Unicode text
    _assert_422(client.post("/predict", content=b'{"text": "bad \\ud800 char"}', headers=headers), "unicode")
    r = client.post("/predict", content=b"text=hello", headers={"content-type": "text/plain"})
    assert 400 <= r.status_code < 500
    assert _rows(server) == before


def _address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP answer from ``sock``: its status and body (to its Content-Length, or to the
    end of the connection)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]


def _raw_answer(server: Server, head: bytes, timeout_s: float = 10.0) -> tuple[int, dict[str, Any]]:
    """Send ``head`` (request line and headers, no body) and read the answer: the server must
    answer without the body it was promised."""
    with socket.create_connection(_address(server), timeout=timeout_s) as sock:
        sock.sendall(head)
        status, body = _read_answer(sock)
    return status, json.loads(body)


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _requests_counted(client: httpx.Client, endpoint: str, outcome: str) -> float:
    samples = scrape(client).get("sentops_requests_total", [])
    return sum(value for labels, value in samples if labels == {"endpoint": endpoint, "outcome": outcome})


def test_a_body_larger_than_any_valid_request_is_refused_before_it_is_read(
    server: Server, client: httpx.Client
) -> None:
    """A client that announces 50 MB gets a 413 at once, not after the server has held and
    parsed it (before the limit the server waited for all of it: this socket timed out). The
    refusal is counted under its route (it was "unmatched", as a 404, when it came before
    routing). A route without texts has the small limit."""
    limits = body_limits(MAX_CHARS, 4)
    counted = _requests_counted(client, "/predict", "4xx"), _requests_counted(client, "unmatched", "4xx")
    head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    status, body = _raw_answer(server, head)
    assert status == 413
    assert body["detail"] == (
        f"request body too large: 50,000,000 bytes, at most {limits['/predict']:,} on /predict "
        "(set by serve.max_text_chars and serve.max_batch_items)"
    )
    after = _requests_counted(client, "/predict", "4xx"), _requests_counted(client, "unmatched", "4xx")
    assert after == (counted[0] + 1, counted[1])
    status, body = _raw_answer(server, head.replace(b"/predict", b"/feedback").replace(b"50000000", b"65537"))
    assert (status, body["detail"]) == (413, "request body too large: 65,537 bytes, at most 65,536 on /feedback")


def test_a_client_that_sends_its_whole_body_before_reading_gets_the_413(server: Server) -> None:
    """Python's http.client (so ``requests``) sends all of a body before it reads: the server
    reads and discards the rest after its 413 (a lingering close). Closing at once made the
    kernel reset the connection under the client's feet: BrokenPipeError or
    ConnectionResetError here instead of the 413."""
    limit = body_limits(MAX_CHARS, 4)["/predict"]
    body = b'{"text": "' + b"a" * 20_000_000 + b'"}'
    host, port = _address(server)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 413
        assert json.loads(answer.read())["detail"].startswith(
            f"request body too large: {len(body):,} bytes, at most {limit:,} on /predict"
        )
    finally:
        conn.close()


def _send_until_refused(sock: socket.socket, seconds: float) -> float | None:
    """Send 64 KiB pieces for up to ``seconds``: the time at which the server's end refused
    them (it has closed), or None."""
    start = time.monotonic()
    while (took := time.monotonic() - start) < seconds:
        try:
            sock.sendall(b"a" * 65536)
        except OSError:
            return took
        time.sleep(0.01)
    return None


def test_a_lingering_close_ends_when_the_client_is_quiet_or_after_its_time(quick_head_server: Server) -> None:
    """After a 413 the server discards what still comes, and closes once the client has been
    quiet for linger_idle_s (0.5 s), or after linger_max_s (1.5 s) of a client that never
    stops: a connection refused 413 is never held longer."""
    head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    with socket.create_connection(_address(quick_head_server), timeout=10) as quiet:
        quiet.sendall(head + b"a" * 1_000_000)
        status, _ = _read_answer(quiet)
        assert status == 413
        assert _send_until_refused(quiet, 0.2) is None  # lingering: still read (and discarded)
        time.sleep(1.0)  # quiet for longer than linger_idle_s
        assert _send_until_refused(quiet, 2.0) is not None  # closed
    with socket.create_connection(_address(quick_head_server), timeout=10) as endless:
        endless.sendall(head)
        status, _ = _read_answer(endless)
        assert status == 413
        took = _send_until_refused(endless, 6.0)
        assert took is not None and 1.0 < took < 4.0, took


def test_a_request_head_past_the_bound_gets_a_431_before_it_ends(server: Server) -> None:
    """A header that never ends is refused as it passes MAX_HEAD_BYTES (before the bound the
    server read all of it, at a cost that grows with its square, holding every client)."""
    with socket.create_connection(_address(server), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        with contextlib.suppress(OSError):  # the server may close while this still sends
            for _ in range(16):
                sock.sendall(b"a" * 65536)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert json.loads(body) == {"detail": too_large_head(MAX_HEAD_BYTES)}


class QuickTimeouts(HeadLimitProtocol):
    head_timeout_s = 0.5
    body_timeout_s = 0.5
    body_min_rate = 20  # bytes a second: the steady test below sends 35
    linger_idle_s = 0.5
    linger_max_s = 1.5


@pytest.fixture(scope="module")
def quick_head_server(server: Server) -> Iterator[Server]:
    """The module's server's settings and store, with head and body time-outs of 0.5 s, a
    body rate of at least 20 bytes a second, and a lingering close of 0.5 s idle, 1.5 s in all."""
    srv = start_server(server.state.settings, http=QuickTimeouts)
    yield srv
    srv.stop()


def test_a_head_that_does_not_arrive_in_time_gets_a_408(quick_head_server: Server) -> None:
    """A connection that sends part of a head, or nothing, is answered 408 and closed (before
    the time-out both were held open for good: these reads timed out)."""
    address = _address(quick_head_server)
    with socket.create_connection(address, timeout=10) as slow, socket.create_connection(address, timeout=10) as silent:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for sock in (slow, silent):
            status, body = _read_answer(sock)
            assert status == 408
            assert json.loads(body) == {"detail": head_too_slow(0.5)}
            assert sock.recv(1) == b""  # closed


def test_a_head_in_pieces_within_the_time_is_served_also_after_a_pause(quick_head_server: Server) -> None:
    """The time runs from a head's first byte, not from the previous answer: a kept-alive
    connection that pauses between requests (less than uvicorn's keep-alive time-out)
    keeps its full time for the next head."""
    with socket.create_connection(_address(quick_head_server), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            time.sleep(0.2)
            sock.sendall(b"Host: 127.0.0.1\r\n\r\n")
            status, body = _read_answer(sock)
            assert (status, json.loads(body)) == (200, {"status": "ok"})
            time.sleep(0.4)


def test_a_stalled_body_gets_a_408_and_stores_nothing(quick_head_server: Server, server: Server) -> None:
    """A client that announces a body and stops sending is answered 408 and closed (before
    the time-out its connection and handler waited for good: this read timed out)."""
    before = _rows(server)
    with socket.create_connection(_address(quick_head_server), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"text": "a fi'
        )
        status, body = _read_answer(sock)
        assert status == 408
        assert json.loads(body) == {"detail": body_stalled(0.5)}
        assert sock.recv(1) == b""
    assert _rows(server) == before


def test_a_body_dribbled_below_the_minimum_rate_gets_a_408_and_stores_nothing(
    quick_head_server: Server, server: Server
) -> None:
    """A byte every 0.2 s never stalls for the 0.5 s of the idle time-out, but is under the
    minimum rate: answered 408 and closed after ~0.7 s (before the rate, the whole body was
    waited for, 3.6 s here, and answered 200; a byte every 29 s held a connection for days)."""
    before = _rows(server)
    body = json.dumps({"text": "one byte at a time"}).encode()
    with socket.create_connection(_address(quick_head_server), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        start = time.monotonic()
        for i in range(len(body)):
            with contextlib.suppress(OSError):  # closed by the server while this still sends
                sock.sendall(body[i : i + 1])
            if select.select([sock], [], [], 0.2)[0]:
                break  # answered
        status, answer = _read_answer(sock)
        took = time.monotonic() - start
        assert status == 408, answer
        assert json.loads(answer) == {"detail": body_too_slow(20, 0.5)}, took
        assert sock.recv(1) == b""
    assert took < 3.0, f"answered after {took:.2f} s of {len(body)} bytes sent 0.2 s apart"
    assert _rows(server) == before


def test_a_body_sent_slowly_but_steadily_is_served(quick_head_server: Server, ledger: Ledger) -> None:
    """The body time-out is for a stall, not for a slow upload: pieces 0.2 s apart for 1.2 s
    (the same store as the module's server: the answer goes into the ledger)."""
    body = json.dumps({"text": "a slow but steady review of a fine film"}).encode()
    with socket.create_connection(_address(quick_head_server), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for i in range(0, len(body), 7):
            time.sleep(0.2)
            sock.sendall(body[i : i + 7])
        status, answer = _read_answer(sock)
    assert status == 200, answer
    assert json.loads(answer)["text"] == "a slow but steady review of a fine film"
    ledger.record("POST", "/predict", status, lambda: json.loads(answer))
    assert quick_head_server.state.writer.flush(30.0)


def test_a_large_head_within_the_bound_is_served(client: httpx.Client) -> None:
    cookie = "c=" + "x" * (MAX_HEAD_BYTES - 4096)
    r = client.post("/predict", json={"text": "a fine film"}, headers={"Cookie": cookie})
    assert r.status_code == 200, r.text


def test_a_chunked_body_is_refused_once_it_passes_the_limit(client: httpx.Client, server: Server) -> None:
    before = _rows(server)
    limit = body_limits(MAX_CHARS, 4)["/predict/batch"]
    sent = 0

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server only learns the size by reading
        nonlocal sent
        yield b'{"texts": ["'
        while sent < 4 * limit:
            sent += 65536
            yield b"a" * 65536

    r = client.post("/predict/batch", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["detail"].startswith(f"request body too large: more than {limit:,} bytes on /predict/batch")
    assert _rows(server) == before


def test_the_largest_valid_requests_pass_the_body_limit(client: httpx.Client) -> None:
    """The limits never refuse a valid request: texts of the most characters, each one that
    takes the most bytes as JSON (outside the BMP, escaped as two \\uXXXX)."""
    text = "\U0001f600" * MAX_CHARS
    one = json.dumps({"text": text}, ensure_ascii=True, indent=4).encode()
    assert len(one) >= MAX_CHARS * 12
    headers = {"content-type": "application/json"}
    assert client.post("/predict", content=one, headers=headers).status_code == 200
    many = json.dumps({"texts": [text] * 4}, ensure_ascii=True, indent=4).encode()
    assert client.post("/predict/batch", content=many, headers=headers).status_code == 200
    records = json.dumps({"dataframe_records": [{"text": text, "source": "x" * 500}] * 4}).encode()
    assert client.post("/invocations", content=records, headers=headers).status_code == 200


def test_batch_limits(client: httpx.Client, server: Server) -> None:
    before = _rows(server)
    _assert_422(client.post("/predict/batch", json={"texts": []}), "texts", "at least 1")
    _assert_422(client.post("/predict/batch", json={"texts": ["a"] * 5}), "texts", "at most 4")
    _assert_422(client.post("/predict/batch", json={"texts": ["fine", " "]}), "texts.1", "whitespace")
    _assert_422(client.post("/predict/batch", json={"texts": ["fine", 3]}), "texts.1", "valid string")
    _assert_422(client.post("/predict/batch", json={"texts": "not a list"}), "texts", "valid list")
    assert _rows(server) == before
    assert client.post("/predict/batch", json={"texts": ["a", "b", "c", "d"]}).status_code == 200
    assert _rows(server) == before + 4


def test_feedback_rejects(client: httpx.Client) -> None:
    auth = {"Authorization": "Bearer fuzz-token"}
    pid = client.post("/predict", json={"text": "fine film"}).json()["id"]
    r = client.post("/feedback", json={"id": "f" * 32, "label": 1}, headers=auth)
    assert r.status_code == 404 and "no logged prediction with id" in r.json()["detail"]
    for bad in (2, "neutral", None, 0.5, False):
        _assert_422(client.post("/feedback", json={"id": pid, "label": bad}, headers=auth), "label")
    _assert_422(client.post("/feedback", json={"id": "", "label": 1}, headers=auth), "id")
    _assert_422(client.post("/feedback", json={"id": 5, "label": 1}, headers=auth), "id")


def test_unknown_routes_and_methods(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404
    assert client.get("/predict").status_code == 405
    assert client.post("/admin/reload").status_code == 401  # token set for this server


def test_messages_are_json_with_a_detail_line(client: httpx.Client) -> None:
    r = client.post("/predict", json={"texts": "wrong field"})
    body = r.json()
    assert set(body) == {"detail", "errors"}
    assert {e["field"] for e in body["errors"]} == {"text", "texts"}
    assert json.dumps(body).count("wrong field") == 0  # the input is not echoed back


FUZZ_EXAMPLES = 25  # per operation and mode: ~10 operations x 2 modes, well under a minute


def test_fuzz_openapi_no_server_errors(server: Server, ledger: Ledger) -> None:
    """Schema-valid and schema-breaking requests to every operation of the published
    schema: never a 5xx, and every answer has a status and content type the schema
    documents. (Strategies per operation rather than ``schemathesis.pytest``, whose
    lazy fixture loader does not work with pytest 9.)"""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    headers = {"Authorization": "Bearer fuzz-token"}
    tried: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(
                max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
            )
            def run(case: Any) -> None:
                response = case.call(base_url=server.url, headers=headers)
                # recorded before the checks, so that a failed check leaves the ledger right
                ledger.record(case.method.upper(), case.formatted_path, response.status_code, response.json)
                case.validate_response(
                    response,
                    checks=[not_a_server_error, status_code_conformance, content_type_conformance],
                    headers=headers,
                    transport_kwargs={"base_url": server.url, "headers": headers},
                )

            try:
                run()
            except Unsatisfiable:
                # no schema-breaking request exists for an operation without a body (GET /health)
                assert mode == GenerationMode.NEGATIVE and not operation.body, operation.label
                continue
            tried.append(f"{operation.label} {mode}")
    labels = {t.rsplit(" ", 1)[0] for t in tried}
    assert {
        "POST /predict",
        "POST /predict/batch",
        "POST /feedback",
        "POST /invocations",
        "POST /admin/reload",
    } <= labels
    assert sum(t.endswith("negative") for t in tried) >= 4, tried  # every operation with a body


def test_nothing_was_written_twice(server: Server, client: httpx.Client, ledger: Ledger) -> None:
    """Every 200 answer of this module (the fuzzer's included) was logged exactly once, with
    the text it answered for, and nothing else was logged: no row for a refused request, none
    written twice under another id, none lost. Some traffic of its own first (repeated texts,
    concurrent requests), so that the check has rows to compare when it runs alone."""
    texts = ["same text", "same text", "another text", "y" * MAX_CHARS]
    with ThreadPoolExecutor(4) as pool:
        singles = list(pool.map(lambda t: client.post("/predict", json={"text": t}), texts * 3))
        batches = list(pool.map(lambda _: client.post("/predict/batch", json={"texts": texts}), range(3)))
        invocations = list(pool.map(lambda _: client.post("/invocations", json={"inputs": texts}), range(2)))
    assert [r.status_code for r in singles + batches + invocations] == [200] * 17

    assert server.state.writer.flush(30.0), "the store writer did not drain"
    assert server.state.writer.pending == 0
    stored = sql_rows(server.state.settings.store_url, "SELECT id, text, text_hash FROM predictions")
    assert len(stored) == ledger.rows >= 12 + 12 + 8
    by_id = {row[0]: row[1:] for row in stored}
    ids = [pid for pid, _ in ledger.answered]
    assert len(set(ids)) == len(ids), "one id answered for two predictions"
    for pid, text in ledger.answered:
        # by content, not only by id: the row holds the text this answer was for
        assert by_id.get(pid) == (text, hashlib.sha256(text.encode("utf-8")).hexdigest()), pid
    # the rows of /invocations (no ids in the answer) are the only others, ours among them
    others = [by_id[pid] for pid in set(by_id) - set(ids)]
    assert len(others) == ledger.invocation_rows
    for text in texts:
        mine = (text, hashlib.sha256(text.encode("utf-8")).hexdigest())
        assert others.count(mine) >= 2 * texts.count(text), text
