"""The container's health check: ``python -m sentiment_ops.healthcheck`` exits 0 when the
server in this container answers ``GET /ready`` with 200, 1 otherwise.

The port is the one the server was started with: ``--port`` (or ``--port=N``) on the
command line of the container's main process (PID 1, also behind an init such as tini,
whose command line holds the server's), else the settings (``SENTOPS_SERVE__PORT``, a
config file), else 8000. Reading the settings alone broke on ``sentops serve --port 9000``."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

MAIN_PROCESS_CMDLINE = Path("/proc/1/cmdline")


def port_from_args(args: list[str]) -> int | None:
    """The value of the last ``--port`` in a command line, if any."""
    port: str | None = None
    for i, arg in enumerate(args):
        if arg == "--port" and i + 1 < len(args):
            port = args[i + 1]
        elif arg.startswith("--port="):
            port = arg.partition("=")[2]
    return int(port) if port and port.isdigit() else None


def server_port(cmdline: Path | None = None) -> int:
    try:
        args = (cmdline or MAIN_PROCESS_CMDLINE).read_bytes().decode(errors="replace").split("\0")
    except OSError:
        args = []
    port = port_from_args(args)
    if port is not None:
        return port
    from sentiment_ops.config import load_settings

    return load_settings(os.environ.get("SENTOPS_CONFIG") or None).serve.port


def main() -> int:
    url = f"http://127.0.0.1:{server_port()}/ready"
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"{url}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
