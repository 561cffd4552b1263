"""
### Rebuild a model version

By hand only: re-creates a registered version from what it recorded and says whether it comes out the
same. Trigger it with the `version` to rebuild.

1. **rebuild_version**: the data manifest's curated objects are read at their recorded ETags (the
   current object, or the object version holding that ETag in a versioned bucket); the window and
   splits are cut again; the model is trained again with the recorded parameters, seed and device;
   both score the holdout. **identical** (largest absolute difference at most 1e-6) or **differs** (by
   how much) goes to the rebuild's MLflow run (`rebuild/verdict.json`) and to the version's tag
   `ct.rebuild_verdict`. A recorded input that is gone fails the task at once with `cannot rebuild: ...`
   naming it. Nothing is registered and no alias moves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from include.continuous_training.config import task_settings
from include.continuous_training.errors import task_outcome
from include.continuous_training.model_files import ModelFile, model_doc, models_to_build
from include.continuous_training.notifications import alert_on_failure


def build_rebuild_model(model_file: ModelFile) -> None:
    """This DAG for one model file."""

    @dag(
        dag_id=model_file.dag_id("rebuild_model"),
        doc_md=model_doc(model_file, __doc__),
        schedule=None,
        start_date=datetime(2026, 11, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=["continuous-training", "governance", model_file.tag],
        params={"version": Param(type="string", pattern="^[0-9]+$", description="The model version to rebuild.")},
        default_args={
            "owner": "ml-platform",
            "retries": 1,  # a network error; a missing input fails at once (CannotRebuild)
            "retry_delay": timedelta(minutes=1),
            "on_failure_callback": alert_on_failure,
        },
    )
    def rebuild_model() -> None:
        @task
        def rebuild_version(**context: Any) -> dict[str, Any]:
            """Recorded inputs → the same model? The verdict in the log, MLflow and the version's tags."""
            from dataclasses import asdict

            from include.continuous_training.rebuild import rebuild_version as rebuild
            from include.continuous_training.storage import s3_client_from_connection

            settings = task_settings(model_file)  # environment, then the model file, then Airflow Variables
            with task_outcome():  # CannotRebuild fails at once: the missing input will not come back
                s3 = s3_client_from_connection(settings.aws_conn_id)
                verdict = rebuild(s3, settings, context["params"]["version"])
            print(verdict.summary())
            return asdict(verdict)

        rebuild_version()

    rebuild_model()


for MODEL in models_to_build("rebuild_model"):  # one DAG per model file (CT_MODELS_DIR)
    build_rebuild_model(MODEL)
