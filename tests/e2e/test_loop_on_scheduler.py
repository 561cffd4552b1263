"""The loop on a real scheduler: `airflow standalone` (scheduler, dag-processor, triggerer, api-server,
LocalExecutor, SQLite) against the loopback S3, MLflow and endpoint.

Drifted traffic → `monitor_drift` (triggered by hand for "today") → it triggers `train_and_deploy` →
the new champion is deployed, promoted, and served by the endpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devtools.datasets import BatchSpec, generate_batch
from include.continuous_training.registry import tracking_client
from tests.integration.conftest import land_and_curate

AIRFLOW = str(Path(sys.executable).parent / "airflow")
pytestmark = pytest.mark.timeout(1200)


def airflow_cli(*args: str) -> str:
    return subprocess.run([AIRFLOW, *args], capture_output=True, text=True, check=True, timeout=180).stdout


def runs_of(dag_id: str) -> list[tuple[str, str, dict]]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return [
            (r.run_id, str(r.state), dict(r.conf or {}))
            for r in session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id)).all()
        ]


def wait_for(predicate, timeout: float, what: str, standalone_log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(3)
    raise AssertionError(f"timed out waiting for {what}; standalone log tail:\n{standalone_log.read_text()[-3000:]}")


@pytest.fixture
def scheduler(services, airflow_db, empty_bucket, tmp_path):
    from devtools.processes import spawn_group, stop_groups
    from devtools.services import free_port, http_ok

    log = tmp_path / "standalone.log"
    port = free_port()
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),  # standalone runs `airflow`
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    process = spawn_group([AIRFLOW, "standalone"], env, cwd=tmp_path, log_path=log)
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/api/v2/monitor/health"), 240, "api-server", log)
        airflow_cli("pools", "set", "gpu", "1", "GPU training slots")
        wait_for(lambda: "monitor_drift" in airflow_cli("dags", "list"), 180, "DAGs parsed", log)
        for dag_id in ("train_and_deploy", "monitor_drift"):
            airflow_cli("dags", "unpause", dag_id)
        yield log
    finally:
        stop_groups([process.pid], grace=60)


TERMINAL = ("success", "failed")


def settled(dag_ids: tuple[str, ...]) -> bool:
    """Every run of these DAGs has finished (unpausing may have created a scheduled run of each)."""
    return all(state in TERMINAL for dag_id in dag_ids for _, state, _ in runs_of(dag_id))


def state_of(dag_id: str, run_id: str) -> str | None:
    return next((state for rid, state, _ in runs_of(dag_id) if rid == run_id), None)


def test_drifted_traffic_retrains_and_the_endpoint_serves_the_new_champion(scheduler, settings, s3, services):
    from tests.integration.conftest import Endpoint
    from tests.integration.test_monitor_drift import latest_drift_decision, send_traffic

    dags = ("train_and_deploy", "monitor_drift")
    client = tracking_client(settings)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    land_and_curate(
        s3, settings, {"e2e0.parquet": generate_batch(BatchSpec(rows=5000, seed=91, start=start, concept_drift=1.0))}
    )

    airflow_cli(
        "dags", "trigger", "train_and_deploy", "--run-id", "e2e-first", "--conf", '{"reason": "e2e first model"}'
    )
    wait_for(
        lambda: state_of("train_and_deploy", "e2e-first") in TERMINAL and settled(dags), 900, "first model", scheduler
    )
    assert state_of("train_and_deploy", "e2e-first") == "success"
    first_champion = client.get_model_version_by_alias(settings.model_name, "champion").version
    endpoint = Endpoint(services.processes["serving"])  # the session's endpoint, started by the services launcher
    assert endpoint.served_version() == first_champion

    land_and_curate(
        s3, settings, {"e2e1.parquet": generate_batch(BatchSpec(rows=8000, seed=92, start=start.replace(day=2)))}
    )
    send_traffic(endpoint, s3, settings, generate_batch(BatchSpec(rows=1500, seed=93, covariate_drift=1.0)))
    airflow_cli("dags", "trigger", "monitor_drift", "--run-id", "e2e-drift")
    wait_for(lambda: state_of("monitor_drift", "e2e-drift") in TERMINAL, 600, "monitor_drift", scheduler)
    triggered = [run_id for run_id, _, conf in runs_of("train_and_deploy") if conf.get("report_uri")]
    assert len(triggered) == 1, f"monitor_drift decided: {latest_drift_decision(s3, settings)}"
    wait_for(lambda: state_of("train_and_deploy", triggered[0]) in TERMINAL, 900, "retraining", scheduler)
    assert state_of("train_and_deploy", triggered[0]) == "success"

    new_champion = client.get_model_version_by_alias(settings.model_name, "champion").version
    assert int(new_champion) > int(first_champion)
    assert endpoint.served_version() == new_champion
