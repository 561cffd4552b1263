"""`train_and_deploy` with a rollout (`dag.test()`): shadow and canary stages against a real endpoint
process under real traffic, each stage a deferred wait on the inference log and an analysis."""

from __future__ import annotations

import dataclasses
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
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


NEW_FEATURE = "device_trust_score"


def _with_new_feature(batches: dict) -> dict:
    """The table gains a column that predicts fraud well; the endpoint's callers do not send it (yet)."""
    out = {}
    for name, frame in batches.items():
        noise = np.random.default_rng(len(frame)).normal(0.0, 0.3, len(frame))
        out[name] = frame.assign(**{NEW_FEATURE: frame["is_fraud"] * 0.5 + noise})
    return out


def _suite_knowing(path: Path, column: str) -> Path:
    """The bundled suite plus ``column`` (required, never null): what a user edits when the table grows."""
    from include.continuous_training.config import DEFAULT_SUITE_PATH

    raw = json.loads(Path(DEFAULT_SUITE_PATH).read_text())
    for expectation in raw["expectations"]:
        if expectation["type"] == "expect_table_columns_to_match_set":
            expectation["kwargs"]["column_set"].append(column)
    raw["expectations"].append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": column}})
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(
    "rollout",
    [
        {
            "CT_ROLLOUT": "canary",
            "CT_CANARY_STEPS": "20,50",
            "CT_SHADOW_PERCENT": "0",
            "CT_ROLLOUT_MIN_REQUESTS": "100",
            "CT_ROLLOUT_MAX_MINUTES": "2",
        }
    ],
    indirect=True,
)
def test_a_candidate_that_passes_offline_but_fails_online_is_rolled_back_in_canary(rollout, s3, monkeypatch, tmp_path):
    """Training/serving skew: version 2 learns from a new column (it wins every offline gate by far), but the
    live callers do not send that column yet, so it cannot score their requests. In canary its requests fall
    back to the champion (no caller sees a failure), the error-rate check fails the first step, and the
    rollout is undone: champion alias, endpoint state and the callers' answers are all version 1 again."""
    from include.continuous_training.config import DEFAULT_NUMERIC_COLUMNS

    dagbag, settings, endpoint, hook = rollout
    suite = _suite_knowing(tmp_path / "suite.json", NEW_FEATURE)
    monkeypatch.setenv("CT_EXPECTATION_SUITE", str(suite))
    settings = dataclasses.replace(settings, expectation_suite_path=suite)
    client = tracking_client(settings)
    land_and_curate(s3, settings, _with_new_feature(_day(0, rows=5000, concept_drift=1.0)))
    first = run_dag(dagbag, DAG_ID)
    assert first.state == "success"
    assert endpoint.served_version() == "1"

    monkeypatch.setenv("CT_NUMERIC_COLUMNS", ",".join((*DEFAULT_NUMERIC_COLUMNS, NEW_FEATURE)))
    land_and_curate(s3, settings, _with_new_feature(_day(1, rows=10000)))
    records = [request_record(generate_batch(BatchSpec(rows=400, seed=98)), i) for i in range(400)]
    assert not any(NEW_FEATURE in record for record in records)
    with LoadLoop(endpoint, records) as load:
        second = run_dag(dagbag, DAG_ID)

    assert second.states_of("smoke_test") == {-1: "success"}, "offline it is fine: the golden set has the column"
    assert second.states_of("start_canary_20") == {-1: "success"}
    assert second.states_of("analyze_canary_20") == {-1: "failed"}
    assert second.states_of("start_canary_50") == {-1: "upstream_failed"}
    assert second.states_of("promote_champion") == {-1: "upstream_failed"}
    assert second.states_of("rollback_deployment") == {-1: "success"}
    assert second.state == "failed"
    assert set(load.statuses) == {200}, "a candidate failing online must cost the callers nothing"
    assert set(load.versions) == {"1"}, "every request the candidate could not score was answered by the champion"
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == "1"
    assert endpoint.served_version() == "1"
    state = LocalEndpoint(endpoint.url, settings.serving_admin_token).rollout_state()
    assert state is not None
    assert (state["champion"], state["candidate"], state["mode"]) == ("1", None, "direct")
    run_id = client.get_model_version(settings.model_name, "2").run_id
    assert run_id is not None
    record = json.loads(Path(client.download_artifacts(run_id, "rollout/canary_20.json")).read_text())
    assert record["verdict"] == "fail", record
    failed = {check["name"] for check in record["checks"] if check["passed"] is False}
    assert "error rate" in failed, record["checks"]
    assert record["candidate"]["errors"] == record["candidate"]["requests"] > 0
    alerts = " ".join(hook.texts())
    assert "failed at canary 20%: error rate" in alerts
