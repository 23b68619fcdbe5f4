"""The Kubernetes manifests in deploy/k8s, checked without a cluster.

- Every resource is validated against the Kubernetes API schemas, strictly (an unknown or
  misspelt field fails), with PyPI ``kubernetes-validate`` (in the dev extra; its schemas
  ship inside the wheel, so this runs offline), for the oldest Kubernetes the manifests need
  (1.31: ``podFailurePolicy``) and the newest the validator knows.
- Then the cross-references a schema cannot see: probes on the container's port and the
  right paths, every environment variable a real sentops setting (fed to ``load_settings``),
  the Secret's keys the token variables sentops reads, the HPA and the Services aimed at the
  Deployment's pods, the CronJob running ``sentops drift`` (its exit-code wrapper run for
  real), the shutdown grace against the server's own timeouts, and the images against the
  Dockerfile targets, docs/deploy.md and docker-compose.yml.
- Who may do what: each workload's PostgreSQL role and MLflow user, MLflow behind its
  basic-auth app, and the NetworkPolicies evaluated for every pair of pods (who reaches
  MLflow and PostgreSQL, and that the default is to refuse).
"""

from __future__ import annotations

import copy
import inspect
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_files import _instructions, _stage, _stages

from sentiment_ops import errors
from sentiment_ops.config import load_settings
from sentiment_ops.serving.store_writer import StoreWriter
from sentiment_ops.settings_layers import SECRET_ENV_VARS

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
OLDEST_KUBERNETES = "1.31"  # podFailurePolicy is GA from 1.31
SENTOPS_WORKLOADS = ("sentops-api", "sentops-drift", "sentops-db-upgrade")


def _files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _resources() -> list[dict[str, Any]]:
    return [doc for path in _files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def _get(kind: str, name: str, resources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    found = [r for r in resources or _resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    spec = resource["spec"]
    if resource["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def _workload(name: str) -> dict[str, Any]:
    found = [r for r in _resources() if r["kind"] in ("Deployment", "Job", "CronJob") and r["metadata"]["name"] == name]
    assert len(found) == 1, name
    return found[0]


def _container(name: str) -> dict[str, Any]:
    (container,) = _pod_spec(_workload(name))["containers"]
    return container


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _image(container: dict[str, Any]) -> str:
    """The image after kustomization.yaml's ``images`` (what `kubectl apply -k` deploys)."""
    name = container["image"]
    for entry in _kustomization().get("images", []):
        if entry["name"] == name:
            return f"{entry.get('newName', name)}:{entry['newTag']}"
    return name


def _secret_data(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in _get("Secret", name)["stringData"].items()}


def _environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the pod would get it (ConfigMaps, Secrets resolved)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_get("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(_secret_data(source["secretRef"]["name"]))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "configMapKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = _get("ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            data = _secret_data(ref["name"])
            assert ref["key"] in data, f"{var['name']}: secret {ref['name']} has no key {ref['key']}"
            env[var["name"]] = data[ref["key"]]
    return env


def _settings_env(env: dict[str, str]) -> dict[str, str]:
    """The variables sentops' settings loader reads."""
    return env


def _dockerfile_env(target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in _stage(_instructions(DOCKERFILE.read_text()), target):
        if word == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", args))
    return env


# -- schema ------------------------------------------------------------------------------
def test_kustomization_lists_every_manifest() -> None:
    assert sorted(_kustomization()["resources"]) == [p.name for p in _files()]
    namespaces = {r["metadata"].get("namespace") for r in _resources() if r["kind"] != "Namespace"}
    assert namespaces == {_kustomization()["namespace"]} == {_get("Namespace", "sentops")["metadata"]["name"]}


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e .[dev] installs kubernetes-validate")
    version = kv.latest_version() if version == "latest" else version
    for doc in yaml.safe_load_all(path.read_text()):
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")


def test_the_validator_rejects_broken_manifests() -> None:
    """The check is real: a misspelt field, a wrong type and a bad HPA all fail."""
    kv = pytest.importorskip("kubernetes_validate")
    deployment = _workload("sentops-api")
    misspelt = copy.deepcopy(deployment)
    container = _pod_spec(misspelt)["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    wrong_type = copy.deepcopy(deployment)
    _pod_spec(wrong_type)["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    hpa = copy.deepcopy(_get("HorizontalPodAutoscaler", "sentops-api"))
    del hpa["spec"]["maxReplicas"]
    for broken in (misspelt, wrong_type, hpa):
        with pytest.raises(kv.ValidationError):
            kv.validate(broken, OLDEST_KUBERNETES, strict=True)


# -- the API ----------------------------------------------------------------------------
def test_api_probes_use_ready_and_health_on_the_container_port() -> None:
    api = _container("sentops-api")
    (port,) = api["ports"]
    args = api["args"]
    assert args[0] == "serve" and int(args[args.index("--port") + 1]) == port["containerPort"]
    assert str(port["containerPort"]) == _dockerfile_env("serve")["SENTOPS_SERVE__PORT"]

    def target(probe: str) -> tuple[str, int]:
        get = api[probe]["httpGet"]
        resolved = port["containerPort"] if get["port"] == port["name"] else get["port"]
        return get["path"], resolved

    assert target("readinessProbe") == ("/ready", port["containerPort"])
    assert target("livenessProbe") == ("/health", port["containerPort"])
    # the model loads before the server listens: the startup probe covers that, on /health
    assert target("startupProbe") == ("/health", port["containerPort"])
    startup = api["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # compose's start_period


def test_api_shutdown_grace_covers_the_drain_and_the_writer_flush() -> None:
    pod = _pod_spec(_workload("sentops-api"))
    serve_cmd = (ROOT / "sentiment_ops" / "cli" / "serve_cmd.py").read_text()
    found = re.search(r"timeout_graceful_shutdown=(\d+)", serve_cmd)
    assert found is not None, "sentops serve passes uvicorn a graceful-shutdown timeout"
    uvicorn_drain = int(found.group(1))
    writer_flush = inspect.signature(StoreWriter.close).parameters["timeout"].default
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + uvicorn_drain + writer_flush


def test_api_resources_threads_and_user_match_the_image() -> None:
    api = _container("sentops-api")
    limits, requests = api["resources"]["limits"], api["resources"]["requests"]
    assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests)
    assert _environment(api)["SENTOPS_SERVE__TORCH_THREADS"] == str(limits["cpu"]), "threads = the CPU limit"
    user = next(a for w, a in _stage(_instructions(DOCKERFILE.read_text()), "serve")[::-1] if w == "USER")
    for name in SENTOPS_WORKLOADS:
        pod = _pod_spec(_workload(name))
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user
        (container,) = pod["containers"]
        home = _environment(container)["SENTOPS_HOME"]
        assert home == _dockerfile_env("serve")["SENTOPS_HOME"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {home, "/tmp"} <= mounts, f"{name}: the home and /tmp must be writable"


def test_service_selects_the_deployments_pods() -> None:
    for service_name, deployment_name in (("sentops-api", "sentops-api"), ("mlflow", "mlflow")):
        service = _get("Service", service_name)
        deployment = _workload(deployment_name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ports = {p["name"]: p["containerPort"] for c in _pod_spec(deployment)["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports or port["targetPort"] in ports.values()
    pdb = _get("PodDisruptionBudget", "sentops-api")
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= _workload("sentops-api")["spec"]["template"]["metadata"]["labels"].items()
    )


def test_hpa_scales_the_api_deployment_on_cpu() -> None:
    hpa = _get("HorizontalPodAutoscaler", "sentops-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    deployment = _workload("sentops-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "cpu" in _container("sentops-api")["resources"]["requests"], "utilization is a share of the request"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"


# -- settings and secrets ------------------------------------------------------------------
@pytest.mark.parametrize("workload", SENTOPS_WORKLOADS)
def test_every_environment_variable_is_one_sentops_reads(workload: str) -> None:
    env = _environment(_container(workload))
    mlflow_client = {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    unknown = {k for k in env if not k.startswith("SENTOPS_") and k not in mlflow_client}
    assert not unknown, f"sentops reads none of {sorted(unknown)}"
    settings = load_settings(environ=_settings_env(env))  # an unknown SENTOPS_* setting raises ConfigError
    assert settings.store_url.startswith("postgresql+psycopg://")
    service = _get("Service", "mlflow")
    assert settings.tracking_uri == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    assert settings.serve.backend == "onnx", "one backend for every sentops container; the serve image runs onnx"
    assert _dockerfile_env("serve")["SENTOPS_SERVE__BACKEND"] == settings.serve.backend


def test_token_secret_holds_the_token_variables_and_no_real_values() -> None:
    tokens = _get("Secret", "sentops-tokens")
    assert sorted(tokens["stringData"]) == sorted(SECRET_ENV_VARS)
    assert set(tokens["stringData"].values()) == {""}, "placeholders only: real tokens never go into git"
    refs = [s["secretRef"]["name"] for s in _container("sentops-api").get("envFrom", []) if "secretRef" in s]
    assert refs == ["sentops-tokens"]
    for name in ("sentops-drift", "sentops-db-upgrade"):
        assert not set(SECRET_ENV_VARS) & set(_environment(_container(name))), "tokens are the API's alone"
    db = _get("Secret", "sentops-db")["stringData"]
    assert all("CHANGE-ME" in url for url in db.values()), "placeholder database URLs only"
    # MLflow's secrets: empty (MLflow and the users Job refuse to start) or CHANGE-ME
    auth = _secret_data("mlflow-auth")
    assert "CHANGE-ME" in auth.pop("basic_auth.ini")
    assert set(auth.values()) == set(_secret_data("sentops-mlflow-users").values()) == {""}


# -- jobs --------------------------------------------------------------------------------
def _run_drift_wrapper(script: str, tmp_path: Path, code: int) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "sentops"
    fake.write_text(f'#!/bin/sh\necho "sentops $*"\nexit {code}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, timeout=10, check=False)


def test_drift_cronjob_runs_sentops_drift_and_treats_drift_as_a_finding(tmp_path: Path) -> None:
    cron = _workload("sentops-drift")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    drift = _container("sentops-drift")
    assert drift["command"] == ["/bin/sh", "-c"]
    (script,) = drift["args"]
    assert "sentops drift --json" in script
    # The wrapper, run for real over a stand-in `sentops`: the check ran → the Job succeeds
    # (0 no drift, 3 drift detected, 4 too few predictions); anything else fails it.
    assert errors.EXIT_DRIFT == 3
    for code, job_exit, line in ((0, 0, "no drift"), (3, 0, "DRIFT DETECTED"), (4, 0, "not enough")):
        result = _run_drift_wrapper(script, tmp_path, code)
        assert (result.returncode, line in result.stdout) == (job_exit, True), result.stdout
        assert "sentops drift --json" in result.stdout
    job = cron["spec"]["jobTemplate"]["spec"]
    (fail_now,) = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_now["onExitCodes"]["containerName"] == drift["name"]
    assert _pod_spec(cron)["restartPolicy"] == "Never"
    codes = {c.exit_code for c in _error_classes()}
    for code in (*fail_now["onExitCodes"]["values"], 69, 70, 1):
        assert code in codes or code == 1
        assert _run_drift_wrapper(script, tmp_path, code).returncode == code, "failures reach the Job"
    assert 3 not in fail_now["onExitCodes"]["values"]


def _error_classes() -> list[type[errors.SentopsError]]:
    found, todo = [], [errors.SentopsError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_db_upgrade_job_migrates_with_the_apis_image() -> None:
    job = _container("sentops-db-upgrade")
    assert job["args"][:2] == ["db", "upgrade"]
    assert "command" not in job, "the image's ENTRYPOINT (sentops) runs it"
    assert _image(job) == _image(_container("sentops-api")), "the schema revision the replicas expect"


# -- images ------------------------------------------------------------------------------
def test_images_are_the_dockerfile_targets_as_deploy_md_and_compose_build_them() -> None:
    stages = _stages(_instructions(DOCKERFILE.read_text()))
    deploy_md = (ROOT / "docs" / "deploy.md").read_text()
    built = {"full": "sentops:full", "serve": "sentops:serve"}
    assert (
        "docker build -t sentops:full ." in deploy_md and "docker build --target serve -t sentops:serve ." in deploy_md
    )
    assert set(built) <= set(stages)
    wanted = {
        "sentops-api": "serve",  # the API on ONNX, no torch
        "sentops-db-upgrade": "serve",
        "sentops-drift": "full",  # as compose's drift service
        "mlflow": "full",  # client and server share one MLflow version
        "sentops-mlflow-users": "full",  # MLflow's auth client, as the server's image
    }
    for workload, target in wanted.items():
        assert _image(_container(workload)) == built[target], workload
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["x-sentops-image"]["build"]["target"] == "full"
    for service in ("drift", "mlflow"):
        assert compose["services"][service]["image"] == compose["x-sentops-image"]["image"]
    names = {
        c["image"]
        for r in _resources()
        if r["kind"] in ("Deployment", "Job", "CronJob")
        for c in _pod_spec(r)["containers"]
    }
    assert names == {e["name"] for e in _kustomization()["images"]}


def test_mlflow_server_reads_its_database_from_the_secret() -> None:
    mlflow = _container("mlflow")
    assert mlflow["command"] == ["mlflow"] and mlflow["args"][0] == "server"
    args = mlflow["args"]
    assert "--serve-artifacts" in args and "--backend-store-uri" not in args, "no password on the command line"
    assert {v["name"] for v in mlflow["env"]} == {
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_AUTH_CONFIG_PATH",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
    }
    destination = args[args.index("--artifacts-destination") + 1]
    assert destination in {m["mountPath"] for m in mlflow["volumeMounts"]}
    claim = _pod_spec(_workload("mlflow"))["volumes"][0]["persistentVolumeClaim"]["claimName"]
    _get("PersistentVolumeClaim", claim)
    assert "mlflow:5000" in args[args.index("--allowed-hosts") + 1].split(",")
    assert _environment(mlflow)["MLFLOW_BACKEND_STORE_URI"].endswith("/mlflow")
    mlflow_cli = pytest.importorskip("mlflow.cli")
    envvars = {p.envvar for p in mlflow_cli.server.params if p.envvar}
    assert "MLFLOW_BACKEND_STORE_URI" in envvars, "mlflow server reads the URL from this variable"


# -- who may do what -----------------------------------------------------------------------
# PostgreSQL role (deploy/postgres/init-inference-db.sql) and MLflow user of each workload
IDENTITIES = {
    "sentops-api": ("sentops_api", "sentops-api"),
    "sentops-drift": ("sentops_jobs", "sentops-jobs"),
    "sentops-db-upgrade": ("sentops_owner", None),
}


@pytest.mark.parametrize("workload", SENTOPS_WORKLOADS)
def test_each_workload_has_its_own_database_role_and_mlflow_user(workload: str) -> None:
    from sqlalchemy.engine import make_url

    role, user = IDENTITIES[workload]
    env = _environment(_container(workload))
    assert make_url(env["SENTOPS_STORE__URL"]).username == role
    assert env.get("MLFLOW_TRACKING_USERNAME") == user
    assert ("MLFLOW_TRACKING_PASSWORD" in env) == (user is not None)
    init_sql = (ROOT / "deploy" / "postgres" / "init-inference-db.sql").read_text()
    assert f"CREATE ROLE {role} LOGIN" in init_sql
    users_script = (ROOT / "deploy" / "mlflow" / "users.py").read_text()
    assert user is None or f'"{user}"' in users_script
    if workload == "sentops-api":
        assert _environment(_container(workload))["SENTOPS_SERVE__REQUIRE_PREDICT_TOKEN"] == "true"
    mlflow_backend = make_url(_environment(_container("mlflow"))["MLFLOW_BACKEND_STORE_URI"])
    assert mlflow_backend.username == "mlflow" and role != "mlflow"


def test_mlflow_runs_the_basic_auth_app_from_its_secret() -> None:
    import configparser

    from mlflow import environment_variables as mlflow_env

    mlflow = _container("mlflow")
    args = mlflow["args"]
    assert args[args.index("--app-name") + 1] == "basic-auth"
    env = _environment(mlflow)
    for name in ("MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert getattr(mlflow_env, name).name == name, "a variable MLflow reads"
    # the config file is the Secret's key, mounted where the variable says
    path = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    (mount,) = [m for m in mlflow["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in _pod_spec(_workload("mlflow"))["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "mlflow-auth" and mount["readOnly"] is True
    assert volume["secret"]["items"] == [{"key": path.name, "path": path.name}]
    config = configparser.ConfigParser()
    config.read_string(_secret_data("mlflow-auth")[path.name])
    assert config["mlflow"]["default_permission"] == "READ"
    assert config["mlflow"]["database_uri"].startswith("postgresql+psycopg://mlflow:")
    assert config["mlflow"]["database_uri"].endswith("/mlflow_auth")
    assert "admin_password" not in config["mlflow"], "the password comes from the Secret's env"
    # the Job that makes the users logs in as that admin
    users = _environment(_container("sentops-mlflow-users"))
    assert users["MLFLOW_TRACKING_USERNAME"] == config["mlflow"]["admin_username"]
    admin_ref = next(v for v in mlflow["env"] if v["name"] == "MLFLOW_AUTH_ADMIN_PASSWORD")["valueFrom"]
    users_ref = next(v for v in _container("sentops-mlflow-users")["env"] if v["name"] == "MLFLOW_TRACKING_PASSWORD")
    assert users_ref["valueFrom"] == admin_ref


def test_mlflow_users_job_runs_the_deploy_script_with_what_it_needs() -> None:
    script = ROOT / "deploy" / "mlflow" / "users.py"
    job = _container("sentops-mlflow-users")
    path = Path(job["command"][-1])
    (mount,) = [m for m in job["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in _pod_spec(_workload("sentops-mlflow-users"))["volumes"] if v["name"] == mount["name"]]
    assert _get("ConfigMap", volume["configMap"]["name"])["data"][path.name] == script.read_text(), (
        "the ConfigMap's copy is deploy/mlflow/users.py"
    )
    needed = set(re.findall(r'"(MLFLOW_[A-Z_]+_PASSWORD)"', script.read_text())) | {"MLFLOW_TRACKING_URI"}
    env = _environment(job)
    assert needed <= set(env)
    # the API and the drift job log in with the passwords the Job gives their users
    by_user = {"sentops-api": "MLFLOW_API_PASSWORD", "sentops-jobs": "MLFLOW_JOBS_PASSWORD"}
    refs = {v["name"]: v.get("valueFrom") for v in job["env"]}
    for workload in ("sentops-api", "sentops-drift"):
        container = _container(workload)
        user = _environment(container)["MLFLOW_TRACKING_USERNAME"]
        password = next(v for v in container["env"] if v["name"] == "MLFLOW_TRACKING_PASSWORD")
        assert password["valueFrom"] == refs[by_user[user]], workload


# -- NetworkPolicies -------------------------------------------------------------------------
INTRUDER = {"app.kubernetes.io/name": "intruder"}  # any other pod in the namespace
POSTGRESQL = {"app.kubernetes.io/name": "postgresql"}  # an in-namespace PostgreSQL
EXTERNAL = None  # an address outside the cluster (a managed PostgreSQL)


def _policies() -> list[dict[str, Any]]:
    return [r for r in _resources() if r["kind"] == "NetworkPolicy"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) against a pod's labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        ok = {
            "In": value in expr.get("values", []),
            "NotIn": value not in expr.get("values", []),
            "Exists": expr["key"] in labels,
            "DoesNotExist": expr["key"] not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], other: dict[str, str] | None) -> bool:
    if "ipBlock" in peer:
        return other is None  # every address in these manifests' ipBlocks lies outside the pods
    if "namespaceSelector" in peer:
        return False  # no policy here admits other namespaces; a test below keeps it so
    return other is not None and _selects(peer["podSelector"], other)


def _allowed(
    pod: dict[str, str], other: dict[str, str] | None, port: int, direction: str, policies: list[dict[str, Any]]
) -> bool:
    """Whether ``pod`` may receive from (Ingress) or send to (Egress) ``other`` on ``port``."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolating = [
        p for p in policies if direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)
    ]
    if not isolating:
        return True  # a pod no policy selects is not isolated
    for policy in isolating:
        for rule in policy["spec"].get(key, []):
            ports = rule.get("ports")
            port_ok = ports is None or any(p.get("port") == port for p in ports)
            peers = rule.get(peers_key)
            peer_ok = peers is None or any(_peer_matches(peer, other) for peer in peers)
            if port_ok and peer_ok:
                return True
    return False


def _connects(
    source: dict[str, str] | None,
    target: dict[str, str] | None,
    port: int,
    policies: list[dict[str, Any]] | None = None,
) -> bool:
    """A connection needs the source's egress and the target's ingress (outside: no policy)."""
    policies = _policies() if policies is None else policies
    out = source is None or _allowed(source, target, port, "Egress", policies)
    into = target is None or _allowed(target, source, port, "Ingress", policies)
    return out and into


def _pod_labels() -> dict[str, dict[str, str]]:
    workloads = [r for r in _resources() if r["kind"] in ("Deployment", "Job", "CronJob")]
    out = {}
    for w in workloads:
        spec = w["spec"]["jobTemplate"]["spec"] if w["kind"] == "CronJob" else w["spec"]
        out[w["metadata"]["name"]] = spec["template"]["metadata"]["labels"]
    return out


def test_every_pod_is_isolated_both_ways_and_may_resolve_names() -> None:
    pods = {**_pod_labels(), "intruder": INTRUDER}
    for name, labels in pods.items():
        for direction in ("Ingress", "Egress"):
            assert any(
                direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)
                for p in _policies()
            ), f"{name}: no policy isolates its {direction}"
        assert _allowed(labels, EXTERNAL, 53, "Egress", _policies()), f"{name}: DNS"
    assert not any(
        "namespaceSelector" in peer
        for p in _policies()
        for r in p["spec"].get("ingress", [])
        for peer in r.get("from", [])
    )


def test_only_sentops_pods_reach_mlflow_and_postgresql() -> None:
    pods = _pod_labels()
    mlflow = pods["mlflow"]
    reach_mlflow = {name for name, labels in {**pods, "intruder": INTRUDER}.items() if _connects(labels, mlflow, 5000)}
    assert reach_mlflow == {"sentops-api", "sentops-drift", "sentops-mlflow-users"}
    # the MLflow ingress policy admits pods of this namespace only, by the sentops labels
    (policy,) = [p for p in _policies() if _selects(p["spec"]["podSelector"], mlflow) and "ingress" in p["spec"]]
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "no rule without sources"
        assert all(set(peer) == {"podSelector"} for peer in rule["from"])
    for target in (POSTGRESQL, EXTERNAL):
        reach_db = {name for name, labels in {**pods, "intruder": INTRUDER}.items() if _connects(labels, target, 5432)}
        assert reach_db == {"sentops-api", "sentops-drift", "sentops-db-upgrade", "mlflow"}, target
    # and nothing else: no pod reaches MLflow or the database on another port, nor the API's
    for source in pods.values():
        assert not _connects(source, mlflow, 5432) and not _connects(source, POSTGRESQL, 5000)


def test_the_api_is_open_on_its_port_only() -> None:
    api = _pod_labels()["sentops-api"]
    (port,) = _container("sentops-api")["ports"]
    # from outside the namespace (an ingress controller, Prometheus): their own policies apply
    assert _connects(EXTERNAL, api, port["containerPort"])
    assert not _connects(EXTERNAL, api, 9999)
    assert not _connects(EXTERNAL, _pod_labels()["mlflow"], 5000), "MLflow is not reachable from outside"


def test_the_policy_evaluator_is_real() -> None:
    """Widen the MLflow ingress to any pod and let every pod send anywhere: the intruder
    now reaches MLflow, which the checks above would see."""
    intruder_open = copy.deepcopy(_policies())
    (mlflow_ingress,) = [p for p in intruder_open if p["metadata"]["name"] == "mlflow-ingress"]
    for rule in mlflow_ingress["spec"]["ingress"]:
        del rule["from"]
    intruder_open.append({"spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}})
    mlflow = _pod_labels()["mlflow"]
    assert not _connects(INTRUDER, mlflow, 5000)
    assert _connects(INTRUDER, mlflow, 5000, intruder_open)
    assert not _connects(INTRUDER, mlflow, 5001, intruder_open), "ports still count"
