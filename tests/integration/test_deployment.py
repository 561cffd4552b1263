"""Deploy, smoke test, promote and roll back against a real endpoint process (2 workers) over HTTP."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from devtools.datasets import BatchSpec, generate_batch
from include.continuous_training.deployment import DeploymentError, LocalEndpoint, rollback_to_champion
from include.continuous_training.registry import register_challenger, tracking_client
from include.continuous_training.training import assemble_training_data, train_challenger
from tests.integration.conftest import Endpoint, Webhook, land_and_curate, run_dag

DAG_ID = "train_and_deploy"
DAY = datetime(2026, 11, 1, tzinfo=UTC)


def _day(i: int, rows: int, **knobs) -> dict:
    return {
        f"day{i}.parquet": generate_batch(BatchSpec(rows=rows, seed=700 + i, start=DAY + timedelta(days=i), **knobs))
    }


def request_record(frame, i: int) -> dict:
    row = frame.iloc[i]
    return {
        k: (v.item() if hasattr(v, "item") else v)
        for k, v in row.items()
        if k not in {"transaction_id", "event_time", "is_fraud"}
    }


@pytest.fixture
def stack(monkeypatch, tmp_path, empty_bucket, airflow_db):
    """A fresh model name, its own endpoint process (2 workers) and the DAGs parsed against them."""
    from airflow.dag_processing.dagbag import DagBag

    from include.continuous_training.config import load_settings
    from tests.conftest import DAGS_FOLDER

    suffix = uuid.uuid4().hex[:8]
    env = {
        "CT_MODEL_NAME": f"deploy-{suffix}",
        "CT_MLFLOW_EXPERIMENT": f"deploy-{suffix}",
        "CT_BOOTSTRAP_SAMPLES": "200",
        "CT_SERVING_ADMIN_TOKEN": secrets.token_urlsafe(16),
        "CT_DEPLOYMENT_TARGET": "local",
        "CT_SMOKE_REQUESTS": "50",
        "CT_INFERENCE_FLUSH_SECONDS": "1",
    }
    endpoint = Endpoint.start(tmp_path / "serving", env)
    hook = Webhook()
    for key, value in {**env, "CT_SERVING_URL": endpoint.url, "CT_ALERT_WEBHOOK_URL": hook.url}.items():
        monkeypatch.setenv(key, value)
    try:
        yield DagBag(dag_folder=str(DAGS_FOLDER)), load_settings(), endpoint, hook
    finally:
        endpoint.stop()
        hook.close()


class LoadLoop:
    """Single-row predictions in a loop (bounded: stops when told or after 180 s)."""

    def __init__(self, endpoint: Endpoint, records: list[dict]) -> None:
        self.endpoint, self.records = endpoint, records
        self.statuses: list[int] = []
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 180
        i = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            status, payload = self.endpoint.post("/predict", self.records[i % len(self.records)])
            self.statuses.append(status)
            if status == 200:
                self.versions.append(payload["model_version"])
            i += 1

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_deploy_under_load_switches_versions_with_zero_failed_requests(stack, s3):
    dagbag, settings, endpoint, _ = stack
    client = tracking_client(settings)
    land_and_curate(s3, settings, _day(0, rows=5000, concept_drift=1.0))

    first = run_dag(dagbag, DAG_ID)
    assert first.state == "success"
    assert first.states_of("smoke_test") == {-1: "success"}
    assert endpoint.served_version() == "1"
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == "1"

    land_and_curate(s3, settings, _day(1, rows=10000))
    records = [request_record(generate_batch(BatchSpec(rows=50, seed=99)), i) for i in range(50)]
    with LoadLoop(endpoint, records) as load:
        time.sleep(1.0)
        second = run_dag(dagbag, DAG_ID)
        time.sleep(1.0)

    assert second.state == "success"
    assert second.states_of("promote_champion") == {-1: "success"}
    assert second.states_of("rollback_deployment") == {-1: "skipped"}
    assert len(load.statuses) > 50
    assert set(load.statuses) == {200}, "every request during the swap must succeed"
    assert load.versions[0] == "1"
    assert load.versions[-1] == "2"
    assert endpoint.served_version() == "2"
    aliases = client.get_registered_model(settings.model_name).aliases
    assert (aliases["champion"], aliases["previous_champion"]) == ("2", "1")
    status, metadata = endpoint.get("/metadata")
    assert status == 200
    assert metadata["model_version"] == "2"
    assert metadata["decision"]["verdict"] == "promote"
    assert metadata["data_manifest"]["rows"]["train"] > 0


def test_a_failed_smoke_test_rolls_back_and_leaves_the_champion(stack, s3, monkeypatch):
    dagbag, settings, endpoint, hook = stack
    client = tracking_client(settings)
    land_and_curate(s3, settings, _day(0, rows=5000, concept_drift=1.0))
    assert run_dag(dagbag, DAG_ID).state == "success"
    land_and_curate(s3, settings, _day(1, rows=10000))

    # An impossible latency budget makes the smoke test fail for a challenger that would otherwise pass.
    monkeypatch.setenv("CT_SMOKE_P99_MS", "0.001")
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import DAGS_FOLDER

    outcome = run_dag(DagBag(dag_folder=str(DAGS_FOLDER)), DAG_ID)

    assert outcome.state == "failed"
    assert outcome.states_of("deploy_challenger") == {-1: "success"}
    assert outcome.states_of("smoke_test") == {-1: "failed"}
    assert outcome.states_of("rollback_deployment") == {-1: "success"}
    assert outcome.states_of("promote_champion") == {-1: "upstream_failed"}
    assert endpoint.served_version() == "1"
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == "1"
    # The rolled-back version is no longer "the newest version that passed every gate".
    aliases = client.get_registered_model(settings.model_name).aliases
    assert "challenger" not in aliases, aliases
    assert client.get_model_version(settings.model_name, "2").tags.get("ct.rolled_back") == "true"
    alerts = hook.texts()
    assert any("Task failed: train_and_deploy.smoke_test" in a and "p99 latency" in a for a in alerts)
    assert any("Deployment rolled back" in a and "champion version 1" in a for a in alerts)


def test_a_corrupt_model_artifact_is_refused_and_rollback_keeps_the_champion(stack, s3):
    dagbag, settings, endpoint, _ = stack
    client = tracking_client(settings)
    land_and_curate(s3, settings, _day(0, rows=5000))
    assert run_dag(dagbag, DAG_ID).state == "success"
    assert endpoint.served_version() == "1"

    land_and_curate(s3, settings, _day(1, rows=5000))
    model = train_challenger(s3, settings, assemble_training_data(s3, settings), dag_run_id="corrupt-run")
    version = register_challenger(client, settings, model["run_id"], model["model_id"], {})
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="mlflow/").get("Contents", [])]
    [ubj] = [k for k in keys if model["model_id"] in k and k.endswith("model.ubj")]
    s3.put_object(Bucket=settings.s3_bucket, Key=ubj, Body=b"\x00not a booster\x00" * 10)

    with pytest.raises(DeploymentError, match="refused version 2"):
        LocalEndpoint(endpoint.url, settings.serving_admin_token).deploy(version)
    assert rollback_to_champion(settings, rolled_back=version) == "1"
    assert endpoint.served_version() == "1"
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == "1"
    assert "challenger" not in client.get_registered_model(settings.model_name).aliases
