"""Throwaway services for the integration tests: a PostgreSQL cluster and an ``mlflow server``
(and ``sentops serve``) on free 127.0.0.1 ports, each stopped by the PID we started.

Nothing here touches a system PostgreSQL: ``initdb`` makes a new cluster in a temp folder and
``postgres`` runs in the foreground as our child. As root, both run as an unprivileged user
(``postgres`` from Debian's package, else ``nobody``), because PostgreSQL refuses root.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sentiment_ops.demo.server import ServeProcess, free_port
from sentiment_ops.errors import SentopsError

ROOT = Path(__file__).resolve().parents[1]
CI_SERVICES_SCRIPT = ROOT / "scripts" / "ci_services.sh"


def sql_rows(url: str, query: str) -> list[tuple[object, ...]]:
    """The rows of one SQL query on a database the test started (checks behind our back)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


def cli_json(cli: Callable[..., Any], *args: str) -> Any:
    """Run a CliRunner-style ``cli(*args)`` that must exit 0 and print JSON; return it parsed."""
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail under CI, where scripts/ci_services.sh installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal the process group we created for ``proc`` (its children too), wait, then kill."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # start_new_session=True: the group id is our child's PID
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# -- PostgreSQL ------------------------------------------------------------------------------
def find_pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` (Debian), else initdb's folder on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    return None


def ensure_postgres_installed() -> Path:
    """The server binaries' folder. Under CI (as root) a missing PostgreSQL is installed with
    scripts/ci_services.sh first; elsewhere the caller skips."""
    bindir = find_pg_bindir()
    if bindir is None and os.environ.get("CI") and os.geteuid() == 0 and CI_SERVICES_SCRIPT.exists():
        subprocess.run(["bash", str(CI_SERVICES_SCRIPT)], check=False, timeout=900)
        bindir = find_pg_bindir()
    if bindir is None:
        unavailable(
            "PostgreSQL server binaries (initdb, postgres) not found: run `bash scripts/ci_services.sh` "
            "(Debian: apt-get install postgresql)"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg (PostgreSQL driver) not installed: pip install -e '.[dev,postgres]'")
    assert bindir is not None
    return bindir


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    unavailable("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")
    return None


@dataclass
class PostgresCluster:
    bindir: Path
    base: Path
    port: int
    user: str = "sentops"
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"bad database name {name!r}")
        conninfo = f"host=127.0.0.1 port={self.port} user={self.user} password={self.password} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # name checked above
        return self.url(name)

    def start(self, timeout: float = 60) -> None:
        run_as = _unprivileged_user()
        ids = {} if run_as is None else {"user": run_as.pw_uid, "group": run_as.pw_gid, "extra_groups": []}
        if run_as is not None:
            os.chown(self.base, run_as.pw_uid, run_as.pw_gid)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if run_as is not None:
            os.chown(pwfile, run_as.pw_uid, run_as.pw_gid)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        data = self.base / "data"
        result = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            env=env,
            cwd=self.base,
            timeout=120,
            check=False,
            **ids,  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.decode(errors='replace')}")
        self._launch(timeout)

    def _launch(self, timeout: float) -> None:
        run_as = _unprivileged_user()
        ids = {} if run_as is None else {"user": run_as.pw_uid, "group": run_as.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        data = self.base / "data"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.base),  # the Unix socket stays in our folder
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",  # a throwaway cluster: durability buys nothing here
                    "-c",
                    "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.base,
                start_new_session=True,
                **ids,  # type: ignore[arg-type]
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        conninfo = f"host=127.0.0.1 port={self.port} user={self.user} password={self.password} dbname=postgres"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}\n{tail(self.log)}")
            try:
                with psycopg.connect(conninfo, connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres not ready after {timeout:.0f} s: {exc}\n{tail(self.log)}") from exc
            time.sleep(0.3)

    def pause(self) -> None:
        """Stop the server (an outage), keeping its data: ``resume`` starts it again."""
        assert self.proc is not None
        stop_process(self.proc, signal.SIGINT)

    def resume(self, timeout: float = 60) -> None:
        """Start the server again on the same port and data."""
        self._launch(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT)  # SIGINT = PostgreSQL's "fast" shutdown
        shutil.rmtree(self.base, ignore_errors=True)


INIT_SQL = ROOT / "deploy" / "postgres" / "init-inference-db.sql"


@dataclass(frozen=True)
class DeployRoles:
    """A cluster set up by deploy/postgres/init-inference-db.sql (run with psql, as the DBA
    or Compose's init script runs it): databases ``mlflow``, ``mlflow_auth``, ``inference``
    and the roles ``mlflow``, ``sentops_owner``, ``sentops_api``, ``sentops_jobs``."""

    cluster: PostgresCluster
    passwords: dict[str, str]

    def url(self, role: str, database: str) -> str:
        c = self.cluster
        return f"postgresql+psycopg://{role}:{self.passwords[role]}@127.0.0.1:{c.port}/{database}"


def provision_roles(cluster: PostgresCluster) -> DeployRoles:
    """Run the deploy files' init SQL on ``cluster`` (once per cluster: it creates fixed names)."""
    roles = {"mlflow": "mlflow", "owner": "sentops_owner", "api": "sentops_api", "jobs": "sentops_jobs"}
    passwords = {role: secrets.token_urlsafe(18) for role in roles.values()}
    variables = [arg for var, role in roles.items() for arg in ("-v", f"{var}_password={passwords[role]}")]
    connect = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", cluster.user, "-d", "postgres"]
    result = subprocess.run(
        [str(cluster.bindir / "psql"), "-X", "-q", *connect, *variables, "-f", str(INIT_SQL)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": cluster.password},
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{INIT_SQL.name} failed: {result.stderr}")
    return DeployRoles(cluster, passwords)


def start_postgres() -> PostgresCluster:
    bindir = ensure_postgres_installed()
    # not under pytest's tmp (mode 0700, owned by root): the server's user must reach it
    base = Path(tempfile.mkdtemp(prefix="sentops-pg-"))
    cluster = PostgresCluster(bindir=bindir, base=base, port=free_port())
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


# -- mlflow server / sentops serve -------------------------------------------------------------
@dataclass
class ServerProcess:
    """A test's child server (the package's ``ServeProcess``): its URL, process and log."""

    child: ServeProcess
    log: Path

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.child.proc

    @property
    def url(self) -> str:
        return self.child.base_url

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        return int(self.child.stop(timeout, sig, group=True))


def _serve(
    command: Sequence[str] | None, args: Sequence[str], env: Mapping[str, str], log: Path, ready: str, timeout: float
) -> ServerProcess:
    """A child server on a free port (``command`` built from ``port``, or ``sentops serve``
    with ``args``), its output in ``log``; returns once ``ready`` answers 200."""
    port = free_port()
    log.unlink(missing_ok=True)
    cmd = [str(port) if c == "{port}" else c for c in command] if command else None
    server = ServerProcess(ServeProcess(_child_env(env), args, port=port, log_path=log, command=cmd), log)
    try:
        server.child.wait_ready(timeout, ready)
    except SentopsError as exc:
        server.stop()
        raise RuntimeError(f"{exc}\n{tail(log)}") from exc
    except BaseException:
        server.stop()
        raise
    return server


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass(frozen=True)
class MlflowAuth:
    """MLflow's basic-auth app for ``start_mlflow_server``, set up as the deploy files set it
    (docker-compose.yml, deploy/k8s/secret-mlflow.yaml): users in a PostgreSQL database,
    ``default_permission = READ``, the admin's password from the environment."""

    database_uri: str  # where the auth app keeps its users (an empty database)
    admin_username: str = "admin"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    def config_file(self, folder: Path) -> Path:
        path = folder / "basic_auth.ini"
        # configparser reads % as interpolation: a percent-encoded password needs %%
        uri = self.database_uri.replace("%", "%%")
        path.write_text(
            f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {uri}\nadmin_username = {self.admin_username}\n"
        )
        path.chmod(0o600)
        return path

    def env(self) -> dict[str, str]:
        """What a client needs to act as the admin."""
        return {"MLFLOW_TRACKING_USERNAME": self.admin_username, "MLFLOW_TRACKING_PASSWORD": self.admin_password}


def start_mlflow_server(
    backend_uri: str, artifacts: Path, log: Path, timeout: float = 120, auth: MlflowAuth | None = None
) -> ServerProcess:
    """``mlflow server`` on ``backend_uri`` with served artifacts; with ``auth``, behind MLflow's
    basic-auth app (every request but /health needs a user)."""
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: nothing here uses MLflow jobs
    app: list[str] = []
    if auth is not None:
        app = ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth.config_file(log.parent))
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = auth.admin_password
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_urlsafe(24)  # the UI's CSRF key
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        *app,
        "--backend-store-uri",
        backend_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        "1",
    ]
    return _serve(cmd, (), env, log, "/health", timeout)


def start_sentops_serve(
    env: Mapping[str, str], log: Path, timeout: float = 120, args: Sequence[str] = ()
) -> ServerProcess:
    """``sentops serve`` (with ``args``) on a free port; returns once /ready says a model is loaded."""
    return _serve(None, args, env, log, "/ready", timeout)
