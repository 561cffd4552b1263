"""
### Ingest new data

Takes new files from S3 `landing/` in, validated, and hands them to training.

1. **wait_for_new_data**: a deferrable sensor lists `landing/` and the ingest manifest in the
   triggerer and fires only for object versions (key + ETag) that were never ingested or quarantined.
   Nothing new within the hour: the run is *skipped*, not failed.
2. **ingest_batch** (one mapped task per object, named by its key): claims the object in the manifest
   (a conditional write: two runs never ingest the same object), reads CSV or Parquet, validates it
   with the versioned Great Expectations suite, then
   - valid: writes Parquet to `curated/batch_id=…/` and emits an event on the `curated_batches`
     Asset (`extra`: batch id, rows, URI), which schedules `train_and_deploy`;
   - a few bad rows (within `CT_BAD_ROW_BUDGET`): those rows go to `quarantine/…/rows.parquet`
     with a report, the rest is curated; a row whose event time is after the ingest time plus
     `CT_MAX_FUTURE_SKEW_MINUTES` is a bad row, one older than the training window is only counted;
   - valid, but a distribution guard fired (a feature constant, a category alone, nulls far above
     the reference's): curated and flagged (`extra.flags`, report, alert), or quarantined with
     `CT_DISTRIBUTION_GUARD_ACTION=quarantine`;
   - invalid or unreadable: the object is copied to `quarantine/<batch_id>/` with `report.json`,
     and the task fails (no retry) with a one-line reason naming the object and where it went.

`landing/` is never modified or deleted. Settings: `include/continuous_training/config.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

from include.continuous_training.assets import curated_batches_asset
from include.continuous_training.config import load_settings, task_settings
from include.continuous_training.errors import task_outcome
from include.continuous_training.model_files import ModelFile, model_doc, models_to_build
from include.continuous_training.notifications import alert_on_failure
from include.continuous_training.sensors import NewLandingObjectsSensor, replay_params


def build_ingest_new_data(model_file: ModelFile) -> None:
    """This DAG for one model file."""
    settings = load_settings(model=model_file)
    curated_batches = curated_batches_asset(model_file, settings)

    @dag(
        dag_id=model_file.dag_id("ingest_new_data"),
        doc_md=model_doc(model_file, __doc__),
        schedule=model_file.schedules["ingest"],
        start_date=datetime(2026, 11, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=["continuous-training", "ingest", model_file.tag],
        params=replay_params(),  # replay_keys: quarantined landing keys to validate again (after a suite fix)
        default_args={
            "owner": "ml-platform",
            "retries": 2,
            "retry_delay": timedelta(minutes=1),
            "retry_exponential_backoff": True,
            "on_failure_callback": alert_on_failure,  # a quarantined batch reaches the alert channel
        },
    )
    def ingest_new_data() -> None:
        wait_for_new_data = NewLandingObjectsSensor(
            task_id="wait_for_new_data",
            aws_conn_id=settings.aws_conn_id,
            model=model_file.name,
            poke_interval=settings.sensor_poke_seconds,
            timeout=settings.sensor_timeout_seconds,
            deferrable=True,
        )

        @task(
            outlets=[curated_batches], map_index_template="{{ landing_key }}", execution_timeout=timedelta(minutes=30)
        )
        def ingest_batch(landing_object: dict[str, Any], **context: Any) -> dict[str, Any]:
            """Validate one landing object; curate it or quarantine it (see the DAG docs)."""
            from airflow.sdk import get_current_context

            from include.continuous_training.ingestion import ingest_object, replay_object
            from include.continuous_training.storage import ObjectRef, s3_client_from_connection

            settings = task_settings(model_file)  # environment, model file, Airflow Variables, defaults
            ref = ObjectRef.from_dict(landing_object)
            get_current_context()["landing_key"] = ref.key  # type: ignore[typeddict-unknown-key]  # names the mapped task
            # Quarantined: fails without retry (retrying cannot make bad data good); claimed by another run: skipped.
            with task_outcome():
                take = replay_object if landing_object.get("replay") else ingest_object  # marked by the sensor
                result = take(s3_client_from_connection(settings.aws_conn_id), settings, ref, context["run_id"])
            context["outlet_events"][curated_batches].extra = result.asset_extra()
            return result.as_dict()

        ingest_batch.expand(landing_object=wait_for_new_data.output)

    ingest_new_data()


for MODEL in models_to_build("ingest_new_data"):  # one DAG per model file (CT_MODELS_DIR)
    build_ingest_new_data(MODEL)
