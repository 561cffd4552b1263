"""`monitor_drift` on real traffic: an endpoint process scores generated batches, its inference log lands
in S3, and the DAG (`dag.test()`) measures it against the champion's reference sample."""

from __future__ import annotations

import io
import secrets
import time
import uuid
from datetime import UTC, datetime

import pandas as pd
import pytest

from devtools.datasets import BatchSpec, generate_batch
from include.continuous_training.config import load_settings
from include.continuous_training.registry import promote_champion, register_challenger, tracking_client
from include.continuous_training.training import assemble_training_data, train_challenger
from tests.integration.conftest import Endpoint, land_and_curate, run_dag

DAG_ID = "monitor_drift"


@pytest.fixture
def drift_stack(monkeypatch, tmp_path, empty_bucket, airflow_db, s3):
    from airflow.dag_processing.dagbag import DagBag

    from include.continuous_training.config import load_settings
    from tests.conftest import DAGS_FOLDER

    suffix = uuid.uuid4().hex[:8]
    env = {
        "CT_MODEL_NAME": f"drift-{suffix}",
        "CT_MLFLOW_EXPERIMENT": f"drift-{suffix}",
        "CT_SERVING_ADMIN_TOKEN": secrets.token_urlsafe(12),
        "CT_INFERENCE_FLUSH_SECONDS": "0.5",
        "CT_DRIFT_MIN_ROWS": "300",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    land_and_curate(s3, settings, {"ref.parquet": generate_batch(BatchSpec(rows=6000, seed=61, start=start))})
    model = train_challenger(s3, settings, assemble_training_data(s3, settings), dag_run_id=f"drift-{suffix}")
    client = tracking_client(settings)
    promote_champion(client, settings, register_challenger(client, settings, model["run_id"], model["model_id"], {}))
    endpoint = Endpoint.start(tmp_path / "serving", env, workers=1)
    deadline = time.monotonic() + 60
    while endpoint.served_version() != "1" and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        yield DagBag(dag_folder=str(DAGS_FOLDER)), settings, endpoint
    finally:
        endpoint.stop()


FEATURES = list(load_settings({}).feature_columns)


def send_traffic(endpoint: Endpoint, s3, settings, frame: pd.DataFrame) -> list[str]:
    """Score ``frame`` through the endpoint in batches; wait until the log holds every row."""
    ids: list[str] = []
    records = frame[FEATURES].to_dict(orient="records")
    for start in range(0, len(records), 500):
        status, payload = endpoint.post("/predict", {"records": records[start : start + 500]})
        assert status == 200, payload
        ids += [p["prediction_id"] for p in payload["predictions"]]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        keys = [
            o["Key"] for o in s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="inference/").get("Contents", [])
        ]
        logged = sum(
            len(pd.read_parquet(io.BytesIO(s3.get_object(Bucket=settings.s3_bucket, Key=k)["Body"].read())))
            for k in keys
        )
        if logged >= len(ids):
            return ids
        time.sleep(0.5)
    raise AssertionError("inference log did not catch up")


def triggered_runs() -> list[dict]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == "train_and_deploy").order_by(DagRun.id)).all()
        return [dict(run.conf or {}) for run in runs if (run.conf or {}).get("report_uri")]


def drift_link(run_id: str) -> str:
    """What the "Drift report" button of compute_drift points at, through the plugin's link class."""
    import sys

    from airflow.models.taskinstancekey import TaskInstanceKey

    from tests.conftest import ROOT

    sys.path.insert(0, str(ROOT / "plugins"))
    from continuous_training_links import DriftReportLink

    return DriftReportLink().get_link(None, ti_key=TaskInstanceKey(DAG_ID, "compute_drift", run_id, 1, -1))  # type: ignore[arg-type]


def finish_training_runs() -> None:
    """Mark queued train_and_deploy runs finished (no scheduler runs them inside dag.test())."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        for run in session.scalars(select(DagRun).where(DagRun.dag_id == "train_and_deploy")).all():
            if run.state in (DagRunState.QUEUED, DagRunState.RUNNING):
                run.state = DagRunState.SUCCESS


def latest_drift_decision(s3, settings) -> dict:
    """The decision record the latest monitor_drift run wrote (``reports/drift/<window>/decision.json``)."""
    import json

    keys = sorted(
        o["Key"]
        for o in s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="reports/drift/").get("Contents", [])
        if o["Key"].endswith("decision.json")
    )
    return json.loads(s3.get_object(Bucket=settings.s3_bucket, Key=keys[-1])["Body"].read())


def test_traffic_like_the_reference_does_not_trigger(drift_stack, s3):
    dagbag, settings, endpoint = drift_stack
    finish_training_runs()
    before = len(triggered_runs())
    send_traffic(endpoint, s3, settings, generate_batch(BatchSpec(rows=1500, seed=62)))

    outcome = run_dag(dagbag, DAG_ID)

    assert outcome.state == "success"
    assert outcome.states_of("record_no_drift") == {-1: "success"}
    assert outcome.states_of("trigger_retraining") == {-1: "skipped"}
    assert latest_drift_decision(s3, settings)["action"] == "no_drift"
    assert len(triggered_runs()) == before


def test_shifted_traffic_triggers_once_then_the_cooldown_holds(drift_stack, s3):
    dagbag, settings, endpoint = drift_stack
    finish_training_runs()
    before = len(triggered_runs())
    send_traffic(endpoint, s3, settings, generate_batch(BatchSpec(rows=1500, seed=63, covariate_drift=1.0)))

    first = run_dag(dagbag, DAG_ID)

    assert first.states_of("trigger_retraining") == {-1: "success"}
    decision = latest_drift_decision(s3, settings)
    assert decision["action"] == "retrain"
    assert "amount" in decision["current"]["drifted_features"]
    [conf] = triggered_runs()[before:]
    assert conf["report_uri"].endswith("report.html")
    assert conf["decision"]["action"] == "retrain"
    assert "drift in 1 of the last 1 windows" in conf["reason"]
    assert drift_link(first.run_id).startswith(settings.mlflow_tracking_uri + "/#/experiments/")
    assert drift_link(first.run_id).endswith("/artifacts/drift_report.html")
    report_key = conf["report_uri"].removeprefix(f"s3://{settings.s3_bucket}/")
    assert b"<html" in s3.get_object(Bucket=settings.s3_bucket, Key=report_key)["Body"].read()[:2000].lower()

    second = run_dag(dagbag, DAG_ID)  # the triggered training has not run yet: one at a time
    assert second.states_of("record_no_drift") == {-1: "success"}
    assert "a train_and_deploy run is active" in " ".join(latest_drift_decision(s3, settings)["reasons"])

    finish_training_runs()
    third = run_dag(dagbag, DAG_ID)  # the same drifted traffic again, but inside the cooldown
    assert third.states_of("record_no_drift") == {-1: "success"}
    assert "cooldown" in " ".join(latest_drift_decision(s3, settings)["reasons"])
    assert len(triggered_runs()) == before + 1


def test_too_few_rows_records_not_enough_data(drift_stack, s3):
    dagbag, settings, endpoint = drift_stack
    send_traffic(endpoint, s3, settings, generate_batch(BatchSpec(rows=50, seed=64, covariate_drift=1.0)))

    outcome = run_dag(dagbag, DAG_ID)

    assert outcome.state == "success"
    assert outcome.states_of("record_no_drift") == {-1: "success"}
    decision = latest_drift_decision(s3, settings)
    assert decision["action"] == "skip"
    assert "not enough data: 50 logged rows in the window, 300 needed" in decision["reasons"][0]


def test_labels_showing_a_performance_drop_trigger_retraining(drift_stack, s3):
    dagbag, settings, endpoint = drift_stack
    finish_training_runs()
    before = len(triggered_runs())
    traffic = generate_batch(BatchSpec(rows=1500, seed=65, concept_drift=1.0))  # inputs look the same
    ids = send_traffic(endpoint, s3, settings, traffic)
    feedback = pd.DataFrame({"prediction_id": ids, "is_fraud": traffic["is_fraud"].to_numpy()})
    buffer = io.BytesIO()
    feedback.to_parquet(buffer, index=False)
    s3.put_object(Bucket=settings.s3_bucket, Key="feedback/labels.parquet", Body=buffer.getvalue())

    outcome = run_dag(dagbag, DAG_ID)

    assert outcome.states_of("trigger_retraining") == {-1: "success"}
    decision = latest_drift_decision(s3, settings)
    assert any("realized ROC AUC" in reason for reason in decision["reasons"])
    assert (
        decision["current"]["drifted_features"] == []
        or decision["current"]["drift_share"] < settings.drift_share_threshold
    )
    assert len(triggered_runs()) == before + 1
