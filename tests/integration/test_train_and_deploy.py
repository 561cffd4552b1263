"""`train_and_deploy` run by Airflow (`dag.test()`) against the real S3 and MLflow servers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from devtools.datasets import BatchSpec, generate_batch
from tests.integration.conftest import Webhook, land_and_curate, run_dag

DAG_ID = "train_and_deploy"
DAY = datetime(2026, 11, 1, tzinfo=UTC)
SABOTAGED = {"max_depth": 1, "num_boost_round": 1}  # one stump: a deliberately worse challenger


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def training(monkeypatch, empty_bucket, airflow_db, webhook):
    """A fresh registered-model name and experiment, alerts to a loopback webhook, the DAGs parsed with them."""
    from airflow.dag_processing.dagbag import DagBag

    from include.continuous_training.config import load_settings
    from include.continuous_training.registry import tracking_client
    from tests.conftest import DAGS_FOLDER

    suffix = uuid.uuid4().hex[:8]
    monkeypatch.setenv("CT_MODEL_NAME", f"fraud-{suffix}")
    monkeypatch.setenv("CT_MLFLOW_EXPERIMENT", f"ct-test-{suffix}")
    monkeypatch.setenv("CT_BOOTSTRAP_SAMPLES", "300")
    monkeypatch.setenv("CT_ALERT_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("CT_DEPLOYMENT_TARGET", "none")  # gates only here; test_deployment.py deploys
    settings = load_settings()
    return DagBag(dag_folder=str(DAGS_FOLDER)), settings, tracking_client(settings)


def _day(i: int, rows: int = 4000, **knobs) -> dict:
    return {
        f"day{i}.parquet": generate_batch(BatchSpec(rows=rows, seed=500 + i, start=DAY + timedelta(days=i), **knobs))
    }


def _aliases(client, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def _versions(client, name: str) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def _decision(client, run_id: str) -> dict:
    return client.get_run(run_id).data.tags


def test_first_champion_then_a_better_one_then_a_worse_one_is_rejected(training, s3, webhook):
    dagbag, settings, client = training
    name = settings.model_name
    # The first model learns a fraud pattern that no longer holds by the time new data arrives.
    land_and_curate(s3, settings, _day(0, rows=5000, concept_drift=1.0))

    first = run_dag(dagbag, DAG_ID, run_conf={"reason": "first model"})
    assert first.state == "success"
    assert first.states_of("register_challenger") == {-1: "success"}
    assert first.states_of("promote_champion") == {-1: "success"}
    assert first.states_of("reject_challenger") == {-1: "skipped"}
    assert _aliases(client, name) == {"champion": "1", "challenger": "1"}

    land_and_curate(s3, settings, _day(1, rows=10000))
    better = run_dag(dagbag, DAG_ID, run_conf={"reason": "new data"})
    assert better.states_of("promote_champion") == {-1: "success"}
    assert _aliases(client, name) == {"champion": "2", "challenger": "2", "previous_champion": "1"}
    version = client.get_model_version(name, "2")
    assert version.tags["ct.dag_run_id"] == better.run_id
    decision = json.loads(version.tags["ct.decision"])
    assert decision["verdict"] == "promote"
    assert decision["champion_version"] == "1"
    assert decision["champion_metrics"]["roc_auc"] < decision["challenger_metrics"]["roc_auc"]
    assert decision["auc_gain"]["ci_low"] > -settings.loss_tolerance
    assert "batches" in version.tags["ct.data_manifest"]

    worse = run_dag(dagbag, DAG_ID, run_conf={"hyperparameters": SABOTAGED})
    assert worse.state == "success"
    assert worse.states_of("reject_challenger") == {-1: "success"}
    assert worse.states_of("register_challenger") == {-1: "skipped"}
    assert worse.states_of("promote_champion") == {-1: "skipped"}
    assert _versions(client, name) == ["1", "2"]
    assert _aliases(client, name)["champion"] == "2"
    runs = client.search_runs(
        [client.get_experiment_by_name(settings.mlflow_experiment).experiment_id],
        filter_string=f"tags.`ct.dag_run_id` = '{worse.run_id}'",
    )
    assert runs[0].data.tags["ct.rejected"] == "true"
    assert runs[0].data.tags["ct.decision"] == "reject"
    assert (
        "beats_champion" in runs[0].data.tags["ct.decision_summary"]
        or "floor" in runs[0].data.tags["ct.decision_summary"]
    )


def test_dry_run_decides_but_changes_nothing(training, s3):
    dagbag, settings, client = training
    land_and_curate(s3, settings, _day(0, rows=5000))

    outcome = run_dag(dagbag, DAG_ID, run_conf={"dry_run": True})

    assert outcome.state == "success"
    assert outcome.states_of("report_dry_run") == {-1: "success"}
    assert outcome.states_of("register_challenger") == {-1: "skipped"}
    assert client.search_model_versions(f"name = '{settings.model_name}'") == []


def test_rerunning_the_same_dag_run_makes_no_second_version(training, s3):
    dagbag, settings, client = training
    land_and_curate(s3, settings, _day(0, rows=5000))
    when = datetime(2026, 11, 20, 12, tzinfo=UTC)

    first = run_dag(dagbag, DAG_ID, logical_date=when)
    again = run_dag(dagbag, DAG_ID, logical_date=when)

    assert first.run_id == again.run_id
    assert again.states_of("promote_champion") == {-1: "success"}
    assert _versions(client, settings.model_name) == ["1"]
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_no_curated_data_fails_at_once_with_a_clear_alert(training, webhook):
    dagbag, _, _ = training
    outcome = run_dag(dagbag, DAG_ID)
    assert outcome.state == "failed"
    assert outcome.states_of("assemble_training_data") == {-1: "failed"}
    [alert] = webhook.texts()
    assert "Task failed: train_and_deploy.assemble_training_data" in alert
    assert "no curated batches yet" in alert


def test_a_wrong_type_in_the_trigger_conf_never_makes_a_run(training, s3):
    """Airflow validates Param values when the run is created: nothing runs, nothing is written."""
    from airflow.sdk.definitions.param import ParamValidationError

    dagbag, settings, client = training
    land_and_curate(s3, settings, _day(0, rows=3000))
    for conf in ({"window_days": "seven"}, {"dry_run": "yes"}, {"hyperparameters": {"max_dept": 8}}):
        with pytest.raises(ParamValidationError):
            run_dag(dagbag, DAG_ID, run_conf=conf)
    assert client.get_experiment_by_name(settings.mlflow_experiment) is None
    assert _versions(client, settings.model_name) == []


def test_an_unknown_key_in_the_trigger_conf_fails_the_first_task_and_trains_nothing(training, s3, webhook):
    dagbag, settings, client = training
    land_and_curate(s3, settings, _day(0, rows=3000))
    outcome = run_dag(dagbag, DAG_ID, run_conf={"window_dayz": 7})
    assert outcome.state == "failed"
    assert outcome.states_of("assemble_training_data") == {-1: "failed"}
    assert outcome.states_of("train_challenger") == {-1: "upstream_failed"}
    [alert] = webhook.texts()
    assert "unknown key(s) ['window_dayz'] in the trigger conf" in alert
    assert client.get_experiment_by_name(settings.mlflow_experiment) is None
    assert _versions(client, settings.model_name) == []
    assert not list(s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="training/").get("Contents", []))


def test_a_window_with_one_class_fails_at_assembly_with_the_reason(training, s3, webhook):
    dagbag, settings, client = training
    [(name, frame)] = _day(0, rows=3000).items()
    land_and_curate(s3, settings, {name: frame.assign(is_fraud=0)})
    outcome = run_dag(dagbag, DAG_ID)
    assert outcome.states_of("assemble_training_data") == {-1: "failed"}
    assert outcome.states_of("train_challenger") == {-1: "upstream_failed"}
    [alert] = webhook.texts()
    assert "label column 'is_fraud' (CT_TASK=binary) holds one class only ([0])" in alert
    assert _versions(client, settings.model_name) == []


def test_a_small_table_whose_holdout_has_a_one_class_slice_still_trains_and_decides(training, s3):
    """2,000 rows: the holdout's `atm` slice has no fraud, so its ROC AUC is undefined. XCom is strict JSON:
    that metric used to be NaN, and `evaluate_challenger` failed on every try."""
    import mlflow

    dagbag, settings, client = training
    land_and_curate(s3, settings, _day(0, rows=2000))

    outcome = run_dag(dagbag, DAG_ID)

    assert outcome.states_of("evaluate_challenger") == {-1: "success"}
    assert outcome.state == "success"
    version = client.get_model_version(settings.model_name, "1")
    evaluation = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/evaluation/evaluation.json")
    slices = evaluation["challenger"]["slices"]
    assert [name for name, figures in slices.items() if figures["roc_auc"] is None] == ["atm"]
    assert slices["atm"]["rows"] > 0
    assert json.loads(version.tags["ct.decision"])["verdict"] == "promote"
