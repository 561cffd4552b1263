"""Every DAG file parses, follows the house rules, and keeps heavy libraries out of parse time."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = ["pandas", "numpy", "xgboost", "sklearn", "mlflow", "great_expectations", "evidently", "pyarrow"]
EXPECTED_SCHEDULES = {"ingest_new_data": "0 * * * *", "train_and_deploy": "0 4 * * 1", "monitor_drift": "0 5 * * *"}
EXPECTED_STRUCTURE = {
    "monitor_drift": {
        "compute_drift": {"decide_retraining", "record_no_drift"},
        "decide_retraining": {"trigger_retraining", "record_no_drift"},
        "trigger_retraining": set(),
        "record_no_drift": set(),
    },
    "ingest_new_data": {
        "wait_for_new_data": {"ingest_batch"},
        "ingest_batch": set(),
    },
    "train_and_deploy": {
        "assemble_training_data": {"train_challenger", "evaluate_challenger", "register_challenger", "smoke_test"},
        "train_challenger": {
            "evaluate_challenger",
            "decide_promotion",
            "register_challenger",
            "reject_challenger",
            "report_dry_run",
        },
        "evaluate_challenger": {"decide_promotion"},
        "decide_promotion": {"register_challenger", "reject_challenger", "report_dry_run"},
        "register_challenger": {"deploy_challenger", "promote_champion"},
        "deploy_challenger": {"smoke_test", "rollback_deployment"},
        "smoke_test": {"promote_champion", "rollback_deployment"},
        "rollback_deployment": set(),
        "promote_champion": set(),
        "reject_challenger": set(),
        "report_dry_run": set(),
    },
}


def _cron(dag) -> str | None:
    """The cron of a time schedule, also inside an asset-or-time schedule."""
    timetable = getattr(dag.timetable, "timetable", dag.timetable)
    return getattr(timetable, "expression", None)


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_expected_dags_and_one_dag_per_file(dagbag):
    assert set(dagbag.dag_ids) == set(EXPECTED_STRUCTURE)
    for dag_id in dagbag.dag_ids:
        assert Path(dagbag.dags[dag_id].fileloc).stem == dag_id


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_STRUCTURE))
def test_operational_defaults(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert (dag.doc_md or "").strip().startswith("###"), "Markdown module docstring as doc_md"
    assert dag.tags
    assert "continuous-training" in dag.tags
    assert dag.catchup is False
    assert dag.start_date is not None
    assert dag.start_date.tzinfo is not None
    assert _cron(dag) == EXPECTED_SCHEDULES[dag_id]
    assert dag.max_active_runs == 1
    for task in dag.tasks:
        assert task.owner == "ml-platform", task.task_id
        assert task.retries >= 1, task.task_id
        assert isinstance(task.retry_delay, timedelta), task.task_id


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_STRUCTURE))
def test_structure(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    structure = {task.task_id: set(task.downstream_task_ids) for task in dag.tasks}
    assert structure == EXPECTED_STRUCTURE[dag_id]


def test_training_runs_on_new_curated_data_or_weekly(dagbag):
    dag = dagbag.dags["train_and_deploy"]
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert [asset.name for asset in dag.timetable.asset_condition.objects] == ["curated_batches"]


def test_training_task_runs_on_the_gpu_queue_and_pool_with_a_timeout(dagbag):
    task = dagbag.dags["train_and_deploy"].get_task("train_challenger")
    assert task.queue == "gpu"
    assert task.pool == "gpu"
    assert task.execution_timeout is not None


def test_training_params_are_typed_for_the_trigger_form(dagbag):
    params = dagbag.dags["train_and_deploy"].params
    assert set(params.keys()) == {"reason", "window_days", "hyperparameters", "dry_run", "report_uri", "decision"}
    assert params.get_param("dry_run").schema["type"] == "boolean"
    assert params.get_param("hyperparameters").schema["additionalProperties"] is False


def test_rollback_runs_only_when_deployment_fails_and_promotion_waits_for_the_smoke_test(dagbag):
    dag = dagbag.dags["train_and_deploy"]
    assert dag.get_task("rollback_deployment").trigger_rule == "one_failed"
    assert dag.get_task("promote_champion").trigger_rule == "none_failed_min_one_success"


def test_drift_triggers_the_training_dag_with_its_decision(dagbag):
    trigger = dagbag.dags["monitor_drift"].get_task("trigger_retraining")
    assert trigger.trigger_dag_id == "train_and_deploy"
    assert set(dagbag.dags["train_and_deploy"].params.keys()) >= {"reason", "report_uri", "decision"}


def test_ingest_sensor_is_deferrable_and_skips_when_idle(dagbag):
    sensor = dagbag.dags["ingest_new_data"].get_task("wait_for_new_data")
    assert sensor.deferrable is True
    assert sensor.soft_fail is True


_PARSE_PROBE = """
import importlib.util, json, sys, time
path = sys.argv[1]
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("probe_dag", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""
_BASELINE_DAG = """
from datetime import datetime, timezone
from airflow.sdk import dag, task
@dag(schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc))
def baseline():
    @task
    def noop():
        return None
    noop()
baseline()
"""


def _parse(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PARSE_PROBE, str(path), json.dumps(HEAVY)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_parse_time_hygiene(dag_file, tmp_path):
    """A fresh interpreter parses the file without importing a heavy library; time vs. a trivial DAG."""
    baseline_file = tmp_path / "baseline_dag.py"
    baseline_file.write_text(_BASELINE_DAG)
    baseline = _parse(baseline_file)
    ours = _parse(dag_file)
    print(
        f"\n{dag_file.name}: parse {ours['seconds']:.2f}s, trivial DAG {baseline['seconds']:.2f}s "
        f"(ratio {ours['seconds'] / baseline['seconds']:.2f})"
    )
    assert ours["heavy"] == [], f"{dag_file.name} imports heavy libraries at parse time: {ours['heavy']}"
    # Generous: the heavy libraries each cost more than a whole trivial parse.
    assert ours["seconds"] < 3 * baseline["seconds"] + 1.0
