"""serving/http_protocol.py subclasses uvicorn's private HttpToolsProtocol: the server checks
at start-up that what the subclass relies on is there, and refuses to start (one line naming
the uvicorn version) when an upgrade took it away, rather than serve without its protections
or fail at every request. The protections themselves are tested in test_serve_bad_input.py."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from sentiment_ops.cli.main import app as cli
from sentiment_ops.config import load_settings
from sentiment_ops.errors import SentopsError
from sentiment_ops.serving import create_app
from sentiment_ops.serving.http_protocol import check_uvicorn


def _without(cls: type, name: str) -> type:
    """A copy of ``cls`` without ``name`` (a method, or a method that sets an attribute
    replaced by one that does not)."""
    body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__", name)}
    return type(cls.__name__, cls.__bases__, body)


def test_the_installed_uvicorn_has_what_the_protocol_relies_on() -> None:
    check_uvicorn()


@pytest.mark.parametrize(
    ("where", "missing"),
    [
        ({"protocol": _without(HttpToolsProtocol, "on_body")}, "HttpToolsProtocol.on_body()"),
        ({"protocol": _without(HttpToolsProtocol, "shutdown")}, "HttpToolsProtocol.shutdown()"),
        ({"flow": _without(FlowControl, "resume_reading")}, "FlowControl.resume_reading()"),
    ],
)
def test_a_missing_method_is_named(where: dict[str, Any], missing: str) -> None:
    with pytest.raises(SentopsError) as raised:
        check_uvicorn(**where)
    message = str(raised.value)
    assert f"uvicorn {uvicorn.__version__} " in message and missing in message
    assert "\n" not in message


def test_a_missing_attribute_is_named() -> None:
    """Attributes the protocol reads that uvicorn's classes no longer set (their __init__ gone)."""
    flow, cycle = _without(FlowControl, "__init__"), _without(RequestResponseCycle, "__init__")
    with pytest.raises(SentopsError, match=r"no FlowControl\.read_paused, RequestResponseCycle\.response_started \("):
        check_uvicorn(flow=flow, cycle=cycle)


def test_the_server_refuses_to_start_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked when the app is built and before `sentops serve` starts anything, not at the
    first request."""
    monkeypatch.delattr(HttpToolsProtocol, "on_headers_complete")
    with pytest.raises(SentopsError, match=r"HttpToolsProtocol\.on_headers_complete\(\)"):
        create_app(load_settings())
    result = CliRunner().invoke(cli, ["serve", "--port", "1"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"uvicorn {uvicorn.__version__} is not supported" in lines[0], result.output
