"""`train_and_deploy` with a rollout (`dag.test()`): shadow and canary stages against a real endpoint
process under real traffic, each stage a deferred wait on the inference log and an analysis."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.datasets import BatchSpec, generate_batch
from include.continuous_training.deployment import LocalEndpoint
from include.continuous_training.registry import tracking_client
from tests.integration.conftest import Endpoint, Webhook, land_and_curate, run_dag
from tests.integration.test_deployment import LoadLoop, request_record

DAG_ID = "train_and_deploy"
DAY = datetime(2026, 11, 1, tzinfo=UTC)


def _day(i: int, rows: int, **knobs) -> dict:
    return {
        f"day{i}.parquet": generate_batch(BatchSpec(rows=rows, seed=900 + i, start=DAY + timedelta(days=i), **knobs))
    }


@pytest.fixture
def rollout(request, monkeypatch, tmp_path, empty_bucket, airflow_db):
    """A fresh model, its own endpoint (2 workers), the DAGs parsed with the rollout settings of ``request.param``."""
    from airflow.dag_processing.dagbag import DagBag

    from include.continuous_training.config import load_settings
    from tests.conftest import DAGS_FOLDER

    suffix = uuid.uuid4().hex[:8]
    env = {
        "CT_MODEL_NAME": f"rollout-dag-{suffix}",
        "CT_MLFLOW_EXPERIMENT": f"rollout-dag-{suffix}",
        "CT_BOOTSTRAP_SAMPLES": "200",
        "CT_SERVING_ADMIN_TOKEN": secrets.token_urlsafe(16),
        "CT_DEPLOYMENT_TARGET": "local",
        "CT_SMOKE_REQUESTS": "50",
        "CT_INFERENCE_FLUSH_SECONDS": "1",
        "CT_SERVING_POLL_SECONDS": "0.5",
        **request.param,
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


def _first_champion(dagbag, settings, endpoint, s3) -> None:
    land_and_curate(s3, settings, _day(0, rows=5000, concept_drift=1.0))
    first = run_dag(dagbag, DAG_ID)
    assert first.state == "success"
    skipped = {task: states for (task, _), states in first.task_states.items() if task.startswith("start_")}
    assert skipped  # the rollout's stages exist ...
    assert set(skipped.values()) == {"skipped"}  # ... and a first model has no champion to roll out beside
    assert first.states_of("promote_champion") == {-1: "success"}
    assert endpoint.served_version() == "1"


SHADOW_THEN_CANARY = {
    "CT_ROLLOUT": "shadow,canary",
    "CT_CANARY_STEPS": "50",
    "CT_SHADOW_PERCENT": "100",
    "CT_ROLLOUT_MIN_REQUESTS": "150",
    "CT_ROLLOUT_MAX_MINUTES": "2",
}


@pytest.mark.parametrize("rollout", [SHADOW_THEN_CANARY], indirect=True)
def test_a_good_candidate_goes_shadow_then_canary_then_champion_with_zero_failed_requests(rollout, s3):
    dagbag, settings, endpoint, _ = rollout
    client = tracking_client(settings)
    _first_champion(dagbag, settings, endpoint, s3)

    land_and_curate(s3, settings, _day(1, rows=10000))
    records = [request_record(generate_batch(BatchSpec(rows=400, seed=99)), i) for i in range(400)]
    with LoadLoop(endpoint, records) as load:
        second = run_dag(dagbag, DAG_ID)

    stages = [f"{step}_{stage}" for stage in ("shadow", "canary_50") for step in ("start", "analyze")]
    stages += [f"wait_for_{stage}_traffic" for stage in ("shadow", "canary_50")]
    assert {task: second.states_of(task) for task in (*stages, "promote_champion", "rollback_deployment")} == {
        **{task: {-1: "success"} for task in (*stages, "promote_champion")},
        "rollback_deployment": {-1: "skipped"},
    }
    assert second.state == "success"
    assert set(load.statuses) == {200}, "every request during the rollout must succeed"
    assert {"1", "2"} <= set(load.versions)  # the canary answered some callers, the champion the others
    assert endpoint.served_version() == "2"
    state = LocalEndpoint(endpoint.url, settings.serving_admin_token).rollout_state()
    assert state is not None
    assert (state["champion"], state["candidate"], state["mode"]) == ("2", None, "direct")
    run_id = client.get_model_version(settings.model_name, "2").run_id
    assert run_id is not None
    for stage in ("shadow", "canary_50"):
        record = json.loads(Path(client.download_artifacts(run_id, f"rollout/{stage}.json")).read_text())
        assert record["verdict"] == "pass", record
        assert record["candidate"]["requests"] >= 150
        assert record["candidate"]["version"] == "2"
        assert record["champion"]["version"] == "1"
        assert {check["name"] for check in record["checks"]} >= {"error rate", "p99 latency", "score distribution"}


@pytest.mark.parametrize(
    "rollout",
    [
        {
            "CT_ROLLOUT": "canary",
            "CT_CANARY_STEPS": "10",
            "CT_ROLLOUT_MIN_REQUESTS": "100",
            "CT_ROLLOUT_MAX_MINUTES": "0.1",
        }
    ],
    indirect=True,
)
def test_no_traffic_by_the_deadline_rolls_back_and_says_why(rollout, s3):
    dagbag, settings, endpoint, hook = rollout
    client = tracking_client(settings)
    _first_champion(dagbag, settings, endpoint, s3)

    land_and_curate(s3, settings, _day(1, rows=10000))
    second = run_dag(dagbag, DAG_ID)  # nobody calls the endpoint

    assert second.state == "failed"
    assert second.states_of("analyze_canary_10") == {-1: "failed"}
    assert second.states_of("promote_champion") == {-1: "upstream_failed"}
    assert second.states_of("rollback_deployment") == {-1: "success"}
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == "1"
    assert endpoint.served_version() == "1"
    state = LocalEndpoint(endpoint.url, settings.serving_admin_token).rollout_state()
    assert state is not None
    assert (state["champion"], state["candidate"]) == ("1", None)
    alerts = " ".join(hook.texts())
    assert "CT_ROLLOUT_MIN_REQUESTS=100: not enough traffic to judge" in alerts
    assert "CT_ROLLOUT_INSUFFICIENT_TRAFFIC=rollback" in alerts
