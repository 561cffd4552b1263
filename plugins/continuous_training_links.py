"""Operator extra links: "MLflow run" on the training task, "Drift report" on the drift task, "Model card"
on the registration and promotion tasks.

Real plugin objects only. The tasks store each URL in XCom with ``links.persist_link`` under the key
each link class declares (``key``, from ``include/continuous_training/links.py``); the link returns
it for the task instance the UI asks about (empty for every other task).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from include.continuous_training.links import DRIFT_REPORT_LINK_KEY, MLFLOW_RUN_LINK_KEY, MODEL_CARD_LINK_KEY

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class _XComLink(BaseOperatorLink):
    name = "link"
    key = ""  # each link declares the XCom key its task persists the URL under

    @property
    def xcom_key(self) -> str:
        return self.key

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.scalars(
                XComModel.get_many(
                    run_id=ti_key.run_id,
                    key=self.xcom_key,
                    task_ids=ti_key.task_id,
                    dag_ids=ti_key.dag_id,
                    map_indexes=ti_key.map_index,
                ).limit(1)
            ).first()
            value = XComModel.deserialize_value(row) if row is not None else None
        return str(value) if value else ""


class MlflowRunLink(_XComLink):
    """The challenger's MLflow run (params, per-round metrics, model, decision record)."""

    name = "MLflow run"
    key = MLFLOW_RUN_LINK_KEY


class DriftReportLink(_XComLink):
    """The day's Evidently report in the MLflow UI."""

    name = "Drift report"
    key = DRIFT_REPORT_LINK_KEY


class ModelCardLink(_XComLink):
    """The registered version's model card (Markdown and HTML artifacts of its MLflow run)."""

    name = "Model card"
    key = MODEL_CARD_LINK_KEY


class ContinuousTrainingPlugin(AirflowPlugin):
    name = "continuous_training"
    global_operator_extra_links = [MlflowRunLink(), DriftReportLink(), ModelCardLink()]
