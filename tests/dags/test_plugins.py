"""The plugin folder holds real plugin objects that Airflow's plugin manager loads."""

from __future__ import annotations

import pytest

from include.continuous_training.links import (
    DRIFT_REPORT_LINK_KEY,
    LINK_KEYS,
    MLFLOW_RUN_LINK_KEY,
    MODEL_CARD_LINK_KEY,
    persist_link,
)


def test_plugin_registers_the_extra_links_under_the_declared_keys():
    from airflow import plugins_manager

    links = plugins_manager.get_global_operator_extra_links()
    keys = {link.name: link.xcom_key for link in links}
    assert keys["Drift report"] == DRIFT_REPORT_LINK_KEY
    assert keys["MLflow run"] == MLFLOW_RUN_LINK_KEY


def test_renaming_a_link_class_keeps_its_key():
    from continuous_training_links import MlflowRunLink

    renamed = type("RenamedLink", (MlflowRunLink,), {})
    assert renamed().xcom_key == MLFLOW_RUN_LINK_KEY


def test_persisting_under_an_undeclared_key_is_refused():
    pushed: list[tuple[str, str]] = []

    class FakeTI:  # the task instance is Airflow's; only the push is observed here
        def xcom_push(self, key: str, value: str) -> None:
            pushed.append((key, value))

    persist_link({"ti": FakeTI()}, MLFLOW_RUN_LINK_KEY, "http://mlflow/run")
    assert pushed == [(MLFLOW_RUN_LINK_KEY, "http://mlflow/run")]
    with pytest.raises(ValueError, match="unknown extra-link key"):
        persist_link({"ti": FakeTI()}, "_link_Typo", "http://x")
    assert set(LINK_KEYS) == {MLFLOW_RUN_LINK_KEY, DRIFT_REPORT_LINK_KEY, MODEL_CARD_LINK_KEY}


def test_the_dags_push_links_only_through_the_declared_keys():
    from tests.conftest import DAGS_FOLDER

    for path in DAGS_FOLDER.glob("*.py"):
        assert "_link_" not in path.read_text(), f"{path.name} spells an extra-link XCom key by hand"
