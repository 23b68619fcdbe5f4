"""A sentops home or store that cannot be opened: one line naming the path and the fix,
exit 70 (StoreError), on every command, never a traceback or uvicorn's exit 3.

Real commands in subprocesses. The tests run as root here, where permission bits stop
nothing, so the homes are made unusable in ways that fail for any user: a file where the
home folder should be, and a folder where the SQLite store file should be. (The container
job, scripts/ci_container.sh, checks the third way: a home owned by root, uid 10001.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentiment_ops.errors import StoreError
from sentiment_ops.paths import writable_dir

COMMANDS = {
    "serve": ["serve", "--port", "1"],  # never reached: the home is checked before binding
    "drift": ["drift"],
    "feedback-export": ["feedback", "export", "out.csv"],
    "feedback-import": ["feedback", "import", "labels.csv"],
    "models": ["models"],
    "db-current": ["db", "current"],
}


def _sentops(home: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTOPS_", "MLFLOW_"))}
    env["SENTOPS_HOME"] = str(home)
    (cwd / "labels.csv").write_text("text,label\ngood film,1\n")
    return subprocess.run(
        [sys.executable, "-m", "sentiment_ops.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_file_in_place_of_the_home(command: str, tmp_path: Path) -> None:
    blocker = tmp_path / "volume"
    blocker.write_text("not a folder")
    home = blocker / ".sentops"
    result = _sentops(home, COMMANDS[command], tmp_path)
    line = _one_line(result)
    assert result.returncode == StoreError.exit_code, line
    assert str(home) in line and "SENTOPS_HOME" in line, line


@pytest.mark.parametrize("command", ["serve", "feedback-export", "feedback-import", "db-current"])
def test_a_folder_in_place_of_the_store_file(command: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "inference.db").mkdir(parents=True)
    result = _sentops(home, COMMANDS[command], tmp_path)
    line = _one_line(result)
    assert result.returncode == StoreError.exit_code, line
    assert str(home / "inference.db") in line and "a folder is in the way" in line, line


def test_writable_dir_names_the_owner_fix_on_a_permission_error(tmp_path: Path) -> None:
    """A read-only folder as an unprivileged user sees it (root is refused by a read-only
    mount only; here the probe itself is made to fail)."""
    folder = tmp_path / "home"
    folder.mkdir()
    os.chmod(folder, 0o500)
    try:
        if os.access(folder, os.W_OK):  # root: permission bits do not stop it
            pytest.skip("running as root: the container job checks the permission case")
        with pytest.raises(StoreError, match=r"not writable \(Permission denied\).*chown -R"):
            writable_dir(folder)
    finally:
        os.chmod(folder, 0o700)


def test_a_server_that_does_not_start_is_not_exit_3() -> None:
    """uvicorn exits 3 when the app's start-up fails: our 3 means "drift detected"."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette

    from sentiment_ops.cli.serve_cmd import serve_until_stopped
    from sentiment_ops.errors import SentopsError

    @asynccontextmanager
    async def broken(app: Starlette):  # type: ignore[no-untyped-def]
        raise RuntimeError("start-up fails")
        yield

    with pytest.raises(SentopsError, match="did not start") as info:
        serve_until_stopped(Starlette(lifespan=broken), host="127.0.0.1", port=0, log_level="critical")
    assert info.value.exit_code == 1
