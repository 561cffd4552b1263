"""docker-compose.yaml: valid against the Compose Specification schema, and shaped the way the docs say.

No Docker engine runs here, so the file is checked, not run: the schema (vendored by
check-jsonschema from compose-spec/compose-spec) and the structure this deployment promises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.continuous_training.airflow_settings import load as load_airflow_settings
from include.continuous_training.config import load_settings
from tests.conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yaml"
AIRFLOW_COMMANDS = {"api-server", "scheduler", "dag-processor", "triggerer"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # resolves the x-airflow-common merge keys


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def airflow_services(services) -> dict[str, dict[str, Any]]:
    """Services that run an Airflow component (the command is an Airflow sub-command)."""
    return {
        name: svc
        for name, svc in services.items()
        if str(svc.get("command", "")).split(" ")[0] in AIRFLOW_COMMANDS | {"celery"}
    }


def compose_validator() -> Any:
    """The Compose Specification schema (draft 2020-12) as vendored by check-jsonschema."""
    import importlib.resources

    import jsonschema

    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def test_the_file_is_valid_against_the_compose_specification(compose):
    validator = compose_validator()
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_the_schema_check_would_catch_a_mistake(compose):
    """The check above is only worth something if it fails on a broken file."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["healthcheck"]["retries"] = [5]
    broken["services"]["redis"]["restrat"] = "always"
    messages = [e.message for e in compose_validator().iter_errors(broken)]
    assert any("restrat" in m for m in messages), messages
    assert any("[5]" in m for m in messages), messages


def test_celery_executor_with_postgres_and_redis(compose, services):
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert {"postgres", "redis", "minio", "minio-init", "mlflow", "serving", "prometheus", "grafana"} <= set(services)
    commands = {str(svc.get("command", "")).split(" ")[0] for svc in airflow_services(services).values()}
    assert commands == AIRFLOW_COMMANDS | {"celery"}


def test_every_airflow_service_runs_the_same_image_and_environment(compose, services):
    common = compose["x-airflow-common"]
    for name, svc in airflow_services(services).items():
        assert svc["image"] == common["image"], name
        assert svc["build"] == ".", name
        assert svc["user"] == common["user"], name
        assert svc["volumes"] == common["volumes"], name
        for key, value in common["environment"].items():
            assert svc["environment"][key] == value, f"{name}: {key}"


def test_the_gpu_worker_consumes_queue_gpu_with_a_device_reservation(services):
    settings = load_settings({})
    gpu = services["airflow-worker-gpu"]
    assert "--queues gpu" in gpu["command"]
    assert f"--queues {settings.gpu_queue}" in gpu["command"]
    assert "--concurrency 1" in gpu["command"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    cpu = services["airflow-worker"]
    assert "--queues default" in cpu["command"]
    assert "gpu" not in cpu["command"].split("--queues", 1)[1]
    assert "deploy" not in cpu
    # The pool the training task asks for is the one airflow_settings.yaml creates.
    pools = {p.name: p.slots for p in load_airflow_settings().pools}
    assert pools[settings.gpu_pool] >= 1


def test_init_runs_first_and_applies_airflow_settings(services):
    init = services["airflow-init"]
    script = "\n".join(init["command"])
    assert "/entrypoint airflow version" in script  # db migrate + admin user via the image's entrypoint
    assert "include.continuous_training.airflow_settings apply" in script
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    for name in airflow_services(services):
        assert services[name]["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}, name


def test_every_service_has_a_healthcheck_and_loopback_only_ports(services):
    for name, svc in services.items():
        assert "healthcheck" in svc, name
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


# A name that holds a credential: *PASSWORD*, *SECRET*, *TOKEN*, a *_KEY / KEY_* part, *_AUTH.
CREDENTIAL_NAME = re.compile(r"PASSW(OR)?D|SECRET|TOKEN|(^|_)KEY($|_)|_AUTH$", re.IGNORECASE)
CREDENTIAL_FLAG = re.compile(r"--[\w-]*(pass|secret|token|key)[\w-]*", re.IGNORECASE)
URL_USERINFO = re.compile(r"\b[a-z][a-z0-9+.-]*://((?:\$\{[^}]*\}|[^/@\s\"'])*)@", re.IGNORECASE)
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]+\}")  # ${VAR:?message}: compose stops when VAR is unset or empty


def credentials(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every credential in a loaded compose file, as (where, value): the value of a credential-named
    key (also inside a JSON value, e.g. an AIRFLOW_CONN_*), the password in a URL's userinfo, the
    argument of a --*pass*/--*secret*/--*token*/--*key* flag."""
    if isinstance(node, dict):
        for key, value in node.items():
            inner = f"{where}.{key}"
            if isinstance(value, str | int | float) and CREDENTIAL_NAME.search(str(key)):
                yield inner, str(value)
            yield from credentials(value, inner)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from credentials(item, f"{where}[{index}]")
            if isinstance(item, str) and CREDENTIAL_FLAG.fullmatch(item) and index + 1 < len(node):
                yield f"{where}[{index + 1}]", str(node[index + 1])
    elif isinstance(node, str):
        for userinfo in URL_USERINFO.findall(node):
            yield f"{where} (URL password)", userinfo.partition(":")[2]
        for match in re.finditer(CREDENTIAL_FLAG.pattern + r"[= ](\S+)", node, re.IGNORECASE):
            yield f"{where} ({match.group(0).split()[0].split('=')[0]})", match.group(2)
        try:
            parsed = json.loads(node) if node.lstrip().startswith("{") else None
        except json.JSONDecodeError:
            parsed = None
        if parsed is not None:
            yield from credentials(parsed, f"{where} (JSON)")


def credentials_without_a_required_variable(compose: dict[str, Any]) -> list[str]:
    return [f"{where}: {value!r}" for where, value in credentials(compose) if not REQUIRED.fullmatch(value)]


def test_every_credential_is_a_required_variable_with_no_default(compose):
    found = dict(credentials(compose))
    missing = credentials_without_a_required_variable(compose)
    assert not missing, "\n".join(["credentials that are not a required ${VAR:?...} interpolation:", *missing])
    # The walk sees each kind of credential this file holds (else the check above passes vacuously).
    expected = {
        ".services.postgres.environment.POSTGRES_PASSWORD": "POSTGRES_PASSWORD",
        ".services.redis.command[2]": "REDIS_PASSWORD",
        ".x-airflow-common.environment.AIRFLOW__CELERY__BROKER_URL (URL password)": "REDIS_PASSWORD",
        ".x-airflow-common.environment.AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (URL password)": "POSTGRES_PASSWORD",
        ".x-airflow-common.environment.AIRFLOW__CELERY__RESULT_BACKEND (URL password)": "POSTGRES_PASSWORD",
        ".services.mlflow.command[3] (URL password)": "MLFLOW_DB_PASSWORD",
        ".x-airflow-common.environment.AIRFLOW_CONN_AWS_CT (JSON).password": "MINIO_ROOT_PASSWORD",
        ".x-airflow-common.environment.AIRFLOW__CORE__FERNET_KEY": "AIRFLOW_FERNET_KEY",
        ".x-airflow-common.environment.AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",
        ".x-airflow-common.environment.CT_SERVING_ADMIN_TOKEN": "CT_SERVING_ADMIN_TOKEN",
        ".services.airflow-init.environment._AIRFLOW_WWW_USER_PASSWORD": "_AIRFLOW_WWW_USER_PASSWORD",
        ".services.grafana.environment.GF_SECURITY_ADMIN_PASSWORD": "GRAFANA_ADMIN_PASSWORD",
    }
    for where, variable in expected.items():
        assert where in found, f"{where} not seen; seen: {sorted(found)}"
        match = REQUIRED.fullmatch(found[where])
        assert match, (where, found[where])
        assert match.group(1) == variable, (where, found[where])
    # A variable that guards a credential has no default anywhere else in the file either.
    text = COMPOSE_FILE.read_text()
    for variable in {REQUIRED.fullmatch(value).group(1) for value in found.values()}:  # type: ignore[union-attr]
        uses = re.findall(r"\$\{" + variable + r"\b([^}]*)\}", text)
        assert all(use.startswith(":?") for use in uses), f"${{{variable}}} is used with a default: {uses}"
    example = (ROOT / ".env.example").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required <= set(re.findall(r"^(\w+)=", example, re.M)), "every required variable is in .env.example"
    assert not re.search(r"^\w*(PASSWORD|SECRET|TOKEN|KEY)\w*=\S", example, re.M), ".env.example holds no secret"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "postgres", "environment", "POSTGRES_PASSWORD"), "airflow"),
        (("x-airflow-common", "environment", "AIRFLOW__CELERY__BROKER_URL"), "redis://:@redis:6379/0"),
        (("x-airflow-common", "environment", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"), "postgresql://a:a@postgres/a"),
        (("x-airflow-common", "environment", "AIRFLOW__CORE__FERNET_KEY"), "${AIRFLOW_FERNET_KEY:-}"),
        (("x-airflow-common", "environment", "AIRFLOW__API_AUTH__JWT_SECRET"), "${AIRFLOW_JWT_SECRET}"),
        (("services", "redis", "command"), "redis-server --requirepass hunter2"),
        (
            ("x-airflow-common", "environment", "AIRFLOW_CONN_AWS_CT"),
            '{"conn_type": "aws", "login": "u", "password": "${MINIO_ROOT_PASSWORD:-minio123}"}',
        ),
        (("services", "grafana", "environment", "GF_SECURITY_ADMIN_PASSWORD"), "admin"),
    ],
)
def test_the_credential_check_catches_a_default_or_a_literal(compose, path, value):
    """The check above is only worth something if it fails on each way a credential can slip in."""
    broken = json.loads(json.dumps(compose))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert credentials_without_a_required_variable(broken), f"{'.'.join(path)}={value!r} was not caught"


def test_mlflow_uses_postgres_and_minio_and_the_endpoint_follows_it(services):
    mlflow = services["mlflow"]
    args = " ".join(mlflow["command"])
    assert "--backend-store-uri=postgresql" in args
    assert "--artifacts-destination=s3://" in args
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    init_script = ROOT / "deploy" / "postgres-init.sh"
    assert "CREATE DATABASE mlflow" in init_script.read_text()
    assert ":'mlflow_password'" in init_script.read_text()  # the password comes from MLFLOW_DB_PASSWORD
    assert init_script.stat().st_mode & 0o111, "executable: the Postgres entrypoint runs it rather than sourcing it"
    assert "./deploy/postgres-init.sh:/docker-entrypoint-initdb.d/10-mlflow.sh:ro" in services["postgres"]["volumes"]
    serving = services["serving"]
    assert serving["entrypoint"][-1] == "include.continuous_training.serving"
    assert serving["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert serving["depends_on"]["mlflow"] == {"condition": "service_healthy"}


def test_monitoring_scrapes_the_endpoint_and_the_dashboard_uses_real_metrics(services):
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == ["serving:8000"]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "serving.json").read_text())
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bct_[a-z_]+", target["expr"])
    }
    app_source = (ROOT / "include" / "continuous_training" / "serving" / "app.py").read_text()
    exported = set(re.findall(r'(?:Counter|Histogram|Gauge)\(\s*"(ct_[a-z_]+)"', app_source))
    exported |= {name + "_total" for name in exported}  # prometheus-client adds _total to counters
    assert used, "the dashboard queries something"
    assert used <= exported, f"the dashboard queries metrics the endpoint does not export: {used - exported}"
    datasource = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["uid"] == dashboard["panels"][0]["datasource"]["uid"]


def test_the_image_bakes_the_package_onto_pythonpath():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#")
    assert "FROM apache/airflow:3.3.2-python3.11" in dockerfile
    assert "-r /opt/ct/requirements.txt -c /opt/ct/constraints.txt" in dockerfile
    for folder in ("dags", "include", "plugins", "models"):
        assert f"COPY --chown=airflow:0 {folder} /opt/airflow/{folder}" in dockerfile
    assert "ENV PYTHONPATH=/opt/airflow" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".env"} <= set(ignored)
    assert Path(ROOT / "airflow_settings.yaml").exists()


# What production runs: DAGs, library, plugins, model files and the settings file (plus the pins to install).
SHIPPED = {"requirements.txt", "constraints.txt", "dags", "include", "plugins", "models", "airflow_settings.yaml"}
LOCAL_ONLY = {"devtools", "tests", "benchmarks", "tools", "bench"}


def copied_sources(dockerfile: str) -> set[str]:
    """Every source of every COPY / ADD instruction (``--flags`` and the destination dropped)."""
    sources: set[str] = set()
    for line in dockerfile.replace("\\\n", " ").splitlines():
        words = line.split()
        if words and words[0].upper() in {"COPY", "ADD"}:
            sources |= {word.rstrip("/").removeprefix("./") for word in words[1:-1] if not word.startswith("--")}
    return sources


def test_the_image_and_the_containers_get_only_what_production_runs(services):
    sources = copied_sources((ROOT / "Dockerfile").read_text())
    assert sources == SHIPPED, f"the image copies {sorted(sources - SHIPPED)} beyond what production runs"
    assert not sources & LOCAL_ONLY
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert ignored >= LOCAL_ONLY, "keep the local stack, tests and benchmarks out of the build context"
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":")[0].removeprefix("./").rstrip("/")
            assert source not in LOCAL_ONLY, f"{name} mounts {volume}"


def test_the_copy_check_would_catch_the_local_stack():
    assert "devtools" in copied_sources("FROM x\nCOPY --chown=airflow:0 devtools /opt/airflow/devtools\n")
    assert copied_sources("COPY a b \\\n  c /dest/\n") == {"a", "b", "c"}
    assert copied_sources("COPY ./ /opt/airflow/\n") == {"."}  # the whole context, devtools included
