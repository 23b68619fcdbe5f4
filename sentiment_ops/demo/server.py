"""A server as a child process on 127.0.0.1: a free port, started, ready, stopped by its PID.

``ServeProcess`` runs ``sentops serve`` (or any command that serves on the port it is given)
for the demo, the benchmarks and the tests; ``ServerProcess`` is the demo's: ``sentops serve``
with the demo's settings and a label-writer token of its own.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from sentiment_ops.config import Settings
from sentiment_ops.errors import SentopsError

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def sentops_serve_command(port: int, args: Sequence[str] = (), python: str = sys.executable) -> list[str]:
    """``sentops serve`` on ``HOST``:``port`` with ``args``, run by ``python``."""
    return [python, "-m", "sentiment_ops.cli.main", "serve", "--host", HOST, "--port", str(port), *args]


class ServeProcess:
    """A child server on a free loopback port (``port`` when given): ``sentops serve`` with
    ``args``, or ``command`` (built by the caller with ``self.port``); its output goes to
    ``log_path`` (appended) or nowhere. It runs in a session of its own, so that ``stop``
    reaches what it starts (``mlflow models serve`` runs uvicorn under a shell)."""

    def __init__(
        self,
        env: Mapping[str, str],
        args: Sequence[str] = (),
        port: int | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] | int = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            list(command) if command else sentops_serve_command(self.port, args),
            env=dict(env),
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float, path: str = "/ready") -> None:
        """Until ``path`` answers 200; raises ``SentopsError`` when the child exits first or
        ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SentopsError(f"the server exited with code {self.proc.returncode} (log: {self.log_path})")
            try:
                if httpx.get(f"{self.base_url}{path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SentopsError(f"the server was not ready within {timeout_s:.0f} s (log: {self.log_path})")

    def stop(self, timeout_s: float = 30, sig: int = signal.SIGTERM, group: bool = False) -> int | None:
        """``sig`` (SIGTERM: graceful, the store writer drains) to the child, or to its whole
        process group with ``group``, then SIGKILL to the group after ``timeout_s``, and to what
        the child left in its group once it exited (``mlflow models serve``'s uvicorn outlives
        its parent); closes the log. The exit code."""
        if self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig)  # its own session: the group id is the child's PID
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group outlives its leader while members remain
        except (ProcessLookupError, PermissionError):
            pass
        if not isinstance(self._log, int):  # an open log file, not subprocess.DEVNULL
            self._log.close()
        return self.proc.returncode


class ServerProcess:
    """``sentops serve`` serving with ``settings`` (written to a private YAML file that the
    child reads as its ``SENTOPS_CONFIG``), with a fresh label-writer token of its own."""

    def __init__(self, settings: Settings, port: int | None = None, log_path: Path | None = None) -> None:
        self._config_dir = tempfile.TemporaryDirectory(prefix="sentops-demo-")  # 0700: URIs may hold passwords
        config_file = Path(self._config_dir.name) / "settings.yaml"
        config_file.write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))
        env = dict(os.environ)
        env["SENTOPS_CONFIG"] = str(config_file)
        env["SENTOPS_HOME"] = str(settings.home)
        env.setdefault("SENTOPS_SERVE__POLL_INTERVAL_S", "1")
        self.feedback_token = secrets.token_urlsafe(32)  # label writes need a token
        env["SENTOPS_FEEDBACK_TOKEN"] = self.feedback_token
        self.child = ServeProcess(env, port=port, log_path=log_path)
        self.port, self.base_url, self.proc = self.child.port, self.child.base_url, self.child.proc

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Until the server is ready; what it serves (GET /model)."""
        self.child.wait_ready(timeout_s)
        return dict(httpx.get(f"{self.base_url}/model", timeout=5).json())

    def stop(self) -> None:
        try:
            self.child.stop()
        finally:
            self._config_dir.cleanup()
