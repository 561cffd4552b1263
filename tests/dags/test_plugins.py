"""The plugin folder holds real plugin objects that Airflow's plugin manager loads."""

from __future__ import annotations


def test_plugin_registers_the_extra_links():
    from airflow import plugins_manager

    links = plugins_manager.get_global_operator_extra_links()
    names = {link.name for link in links}
    assert {"MLflow run", "Drift report"} <= names
    keys = {link.name: link.xcom_key for link in links}
    assert keys["Drift report"] == "_link_DriftReportLink"
    assert keys["MLflow run"] == "_link_MlflowRunLink"
