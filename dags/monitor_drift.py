"""
### Monitor drift

Once a day, compares the endpoint's traffic with the champion's reference sample and decides whether
to retrain. Trigger it by hand to check "today" without waiting for the schedule.

1. **compute_drift**: the inference-log rows of the last `window_hours` (from S3 `inference/`) against the
   reference sample logged with the *current* champion. Evidently 0.7 `DataDriftPreset` on the features
   plus drift of the prediction score, on seeded samples of at most `CT_DRIFT_SAMPLE_ROWS` rows. Labels
   that arrived under `feedback/` give the champion's realized ROC AUC. Too few rows or no champion:
   "not enough data" is recorded and nothing is decided. Reports go to `reports/drift/<window>/`
   (`report.html`, `report.json`, `summary.json`) and to MLflow.
2. **decide_retraining**: the policy (drift share >= `CT_DRIFT_SHARE` in N of the last M windows, or
   realized ROC AUC below the floor; not within the cooldown; not while `train_and_deploy` runs) → branch:
   - **trigger_retraining**: runs `train_and_deploy` with conf `{reason, report_uri, decision}`;
   - **record_no_drift**: the decision is recorded, nothing else happens.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronTriggerTimetable, Param, XComArg, dag, task

from include.continuous_training.config import task_settings
from include.continuous_training.errors import task_outcome
from include.continuous_training.links import DRIFT_REPORT_LINK_KEY, persist_link
from include.continuous_training.model_files import ModelFile, model_doc, models_to_build
from include.continuous_training.notifications import alert_on_failure


def build_monitor_drift(model_file: ModelFile) -> None:
    """This DAG for one model file."""

    @dag(
        dag_id=model_file.dag_id("monitor_drift"),
        doc_md=model_doc(model_file, __doc__),
        schedule=CronTriggerTimetable(model_file.schedules["drift"], timezone="UTC"),
        start_date=datetime(2026, 11, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=["continuous-training", "monitoring", model_file.tag],
        params={"window_hours": Param(24, type="integer", minimum=1, maximum=24 * 31, description="Traffic window.")},
        default_args={
            "owner": "ml-platform",
            "retries": 2,
            "retry_delay": timedelta(minutes=2),
            "on_failure_callback": alert_on_failure,
        },
    )
    def monitor_drift() -> None:
        @task
        def compute_drift(**context: Any) -> dict[str, Any]:
            """Traffic of the window vs. the champion's reference; reports to S3 and MLflow."""
            from include.continuous_training.drift import measure_window
            from include.continuous_training.run_conf import check_run_conf
            from include.continuous_training.storage import s3_client_from_connection

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            end = context["dag_run"].run_after
            with task_outcome():
                check_run_conf(context)
                summary = measure_window(
                    s3_client_from_connection(settings.aws_conn_id),
                    settings,
                    end - timedelta(hours=context["params"]["window_hours"]),
                    end,
                )
            persist_link(context, DRIFT_REPORT_LINK_KEY, summary.get("mlflow_report_url", ""))  # "Drift report" button
            return summary

        @task.branch
        def decide_retraining(summary: dict[str, Any], **context: Any) -> str:
            """N-of-M windows, cooldown, one training at a time → trigger or record."""
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            from include.continuous_training.drift import decide_and_record
            from include.continuous_training.storage import s3_client_from_connection

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            active = (
                RuntimeTaskInstance.get_dr_count(
                    dag_id=model_file.dag_id("train_and_deploy"), states=["queued", "running"]
                )
                > 0
            )
            s3 = s3_client_from_connection(settings.aws_conn_id)
            decision, conf = decide_and_record(s3, settings, summary, context["dag_run"].run_after, active)
            print(f"{decision.action}: {'; '.join(decision.reasons)}")
            context["ti"].xcom_push(key="retrain_conf", value=conf)
            return "trigger_retraining" if decision.action == "retrain" else "record_no_drift"

        @task
        def record_no_drift(summary: dict[str, Any]) -> None:
            """Nothing to do today; the summary and decision are in reports/drift/ and MLflow."""
            print(f"no retraining: window {summary.get('window')}, status {summary.get('status')}")

        summary = compute_drift()
        decision = decide_retraining(summary)
        trigger_retraining = TriggerDagRunOperator(
            task_id="trigger_retraining",
            trigger_dag_id=model_file.dag_id("train_and_deploy"),
            conf=XComArg(decision.operator, key="retrain_conf"),  # type: ignore[attr-defined]  # PlainXComArg
            wait_for_completion=False,
        )
        decision >> [trigger_retraining, record_no_drift(summary)]

    monitor_drift()


for MODEL in models_to_build("monitor_drift"):  # one DAG per model file (CT_MODELS_DIR)
    build_monitor_drift(MODEL)
