"""Several model files → several independent sets of DAGs (Airflow's dynamic DAG generation)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.continuous_training.config import DEFAULT_SUITE_PATH
from tests.conftest import DAGS_FOLDER, ROOT

PENGUINS: dict[str, Any] = {
    "name": "penguins",
    "task": "multiclass",
    "description": "Palmer penguins",
    "table": {"label": "species", "numeric": ["bill_length_mm", "body_mass_g"], "categorical": ["island", "sex"]},
    "suite": "penguins.suite.json",
    "schedules": {"ingest": "*/30 * * * *", "train": "0 6 * * *"},
}


def dagbag_for(models: Path, monkeypatch: pytest.MonkeyPatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("CT_MODELS_DIR", str(models))
    return DagBag(dag_folder=str(DAGS_FOLDER))


@pytest.fixture
def two_models(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "models" / "transactions.yaml", tmp_path / "transactions.yaml")
    text = (tmp_path / "transactions.yaml").read_text()
    # The copy's suite path is relative to models/: point it at the bundled suite from here.
    (tmp_path / "transactions.yaml").write_text(
        text.replace(
            "suite: ../include/continuous_training/expectations/transactions.json", f"suite: {DEFAULT_SUITE_PATH}"
        )
    )
    shutil.copy(DEFAULT_SUITE_PATH, tmp_path / "penguins.suite.json")
    (tmp_path / "penguins.yaml").write_text(yaml.safe_dump(PENGUINS))
    return tmp_path


def test_each_model_file_gets_its_own_dags_asset_schedules_and_tags(two_models, monkeypatch):
    dagbag = dagbag_for(two_models, monkeypatch)
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {
        "ingest_new_data",
        "train_and_deploy",
        "monitor_drift",
        "rebuild_model",
        "ingest_new_data_penguins",
        "train_and_deploy_penguins",
        "monitor_drift_penguins",
        "rebuild_model_penguins",
    }
    train = dagbag.dags["train_and_deploy_penguins"]
    assert [asset.name for asset in train.timetable.asset_condition.objects] == ["curated_batches_penguins"]
    assert train.timetable.timetable.expression == "0 6 * * *"
    assert dagbag.dags["ingest_new_data_penguins"].timetable.expression == "*/30 * * * *"
    [outlet] = dagbag.dags["ingest_new_data_penguins"].get_task("ingest_batch").outlets
    assert outlet.name == "curated_batches_penguins"
    assert outlet.extra["location"] == "s3://ct-data/penguins/curated/"
    [bundled_outlet] = dagbag.dags["ingest_new_data"].get_task("ingest_batch").outlets
    assert bundled_outlet.extra["location"] == "s3://ct-data/curated/"
    for stem in ("ingest_new_data", "train_and_deploy", "monitor_drift"):
        dag = dagbag.dags[f"{stem}_penguins"]
        assert "model:penguins" in dag.tags
        assert "model:transactions" not in dag.tags
        assert "**Model `penguins`** (multiclass; `penguins.yaml`) — Palmer penguins" in dag.doc_md
        assert dag.doc_md.startswith("###")
        assert Path(dag.fileloc).stem == stem
    assert dagbag.dags["ingest_new_data_penguins"].get_task("wait_for_new_data").model == "penguins"
    trigger = dagbag.dags["monitor_drift_penguins"].get_task("trigger_retraining")
    assert trigger.trigger_dag_id == "train_and_deploy_penguins"
    assert dagbag.dags["monitor_drift"].get_task("trigger_retraining").trigger_dag_id == "train_and_deploy"


def test_a_broken_model_file_is_an_import_error_naming_the_file_and_field(two_models, monkeypatch):
    broken = dict(PENGUINS, table={**PENGUINS["table"], "label": None})
    (two_models / "penguins.yaml").write_text(yaml.safe_dump(broken))
    dagbag = dagbag_for(two_models, monkeypatch)
    assert set(dagbag.import_errors) == {str(path) for path in DAGS_FOLDER.glob("*.py")}
    for error in dagbag.import_errors.values():
        assert f"{two_models / 'penguins.yaml'}: table.label: expected a non-empty string" in error


def test_no_model_files_no_dags(tmp_path, monkeypatch):
    dagbag = dagbag_for(tmp_path, monkeypatch)
    assert dagbag.import_errors == {}
    assert dagbag.dag_ids == []


def test_a_worker_parsing_for_one_task_builds_only_that_dag(two_models, monkeypatch):
    # What Airflow sets when a worker parses the file to run a task of train_and_deploy_penguins.
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "train_and_deploy_penguins")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "train_challenger")
    dagbag = dagbag_for(two_models, monkeypatch)
    assert dagbag.import_errors == {}
    assert dagbag.dag_ids == ["train_and_deploy_penguins"]
