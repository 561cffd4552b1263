"""Airflow Variables reach task code through ``runtime_settings()``: a real metadata DB, a real task run.

The DAG below is one task that returns a setting; it is written into its own DAG bundle (``dag.test()``
runs only DAGs that a configured bundle holds) and run with ``dag.test()``. The Variable is written to
the metadata DB the way an operator would (``Variable.set``), not through the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DAG_ID = "ct_test_runtime_settings"
VARIABLE = "CT_MAX_DEPTH"  # Settings.max_depth, default 6
PROBE_DAG = f'''
from datetime import UTC, datetime

from airflow.sdk import dag, task


@dag(dag_id="{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False)
def {DAG_ID}():
    @task
    def read_max_depth() -> int:
        from include.continuous_training.config import runtime_settings

        return runtime_settings().max_depth

    read_max_depth()


{DAG_ID}()
'''


@pytest.fixture(scope="module")
def probe_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("probe-bundle")
    (folder / f"{DAG_ID}.py").write_text(PROBE_DAG)
    return folder


@pytest.fixture
def probe_dag(metadata_db, probe_bundle, monkeypatch) -> Any:
    """The probe DAG, with its bundle configured next to the project's own dags-folder bundle."""
    from airflow.dag_processing.dagbag import DagBag

    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "ct-test-probe", "classpath": local, "kwargs": {"path": str(probe_bundle)}},
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    dagbag = DagBag(dag_folder=str(probe_bundle))
    assert not dagbag.import_errors, dagbag.import_errors
    return dagbag.dags[DAG_ID]


def run_probe(dag: Any) -> tuple[str, Any]:
    """Run the probe DAG once; its task's state and the value it returned."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_run = dag.test()
    with create_session() as session:
        state = session.scalars(
            select(TaskInstance.state).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == dag_run.run_id)
        ).one()
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == DAG_ID, XComModel.run_id == dag_run.run_id, XComModel.key == "return_value"
            )
        ).all()
        values = [XComModel.deserialize_value(row) for row in rows]
    return str(state), values[0] if values else None


@pytest.fixture
def max_depth_variable(metadata_db, monkeypatch):
    """Sets the Airflow Variable CT_MAX_DEPTH in the metadata DB for one test; the env var starts unset."""
    from airflow.models.variable import Variable

    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.delenv(f"AIRFLOW_VAR_{VARIABLE}", raising=False)

    def set_to(value: str) -> None:
        Variable.set(VARIABLE, value)

    yield set_to
    Variable.delete(VARIABLE)


def test_a_variable_in_the_metadata_db_reaches_the_task(probe_dag, max_depth_variable):
    max_depth_variable("9")
    assert run_probe(probe_dag) == ("success", 9)


def test_the_environment_wins_over_the_variable(probe_dag, max_depth_variable, monkeypatch):
    max_depth_variable("9")
    monkeypatch.setenv(VARIABLE, "4")
    assert run_probe(probe_dag) == ("success", 4)


def test_without_either_the_task_gets_the_default(probe_dag, monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert run_probe(probe_dag) == ("success", 6)


def test_a_malformed_variable_fails_the_task(probe_dag, max_depth_variable):
    max_depth_variable("six")
    state, value = run_probe(probe_dag)
    assert state == "failed"
    assert value is None


def test_parsing_the_dag_never_reads_variables(max_depth_variable):
    """What DAG files call at module level sees the environment only, even inside Airflow."""
    from include.continuous_training.config import load_settings

    max_depth_variable("9")
    assert load_settings().max_depth == 6
