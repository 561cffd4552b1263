"""A real scheduler killed in the middle of an ingest, then started again: the run completes and the
object is ingested exactly once."""

from __future__ import annotations

import os

import pytest

from devtools.datasets import BatchSpec, generate_batch, to_bytes

pytestmark = pytest.mark.timeout(1200)


def test_airflow_killed_mid_ingest_then_restarted_finishes_the_run_once(tmp_path, monkeypatch):
    from devtools.stack import LocalStack
    from include.continuous_training.ingestion import read_manifest
    from include.continuous_training.storage import list_objects

    # Notice the killed task's missing heartbeats in seconds, not the default five minutes.
    monkeypatch.setenv("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT", "15")
    monkeypatch.setenv("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL", "5")
    # tests/conftest.py makes sensors give up after 4 s for dag.test(); a real scheduler waits.
    monkeypatch.setenv("CT_SENSOR_TIMEOUT_SECONDS", "3300")
    monkeypatch.setenv("CT_SENSOR_POKE_SECONDS", "2")
    saved = dict(os.environ)  # the stack points this process at its own services
    # Only the ingest DAG runs: the others' scheduled ticks would only share the two cores.
    stack = LocalStack(home=tmp_path / "stack", log=print, unpause=("ingest_new_data",))
    try:
        stack.start()
        api = stack.api
        assert api is not None
        run_id = stack.wait_for_listening_ingest_run()
        key = stack.settings.landing_prefix + "restart/batch.parquet"
        body = to_bytes(generate_batch(BatchSpec(rows=300_000, seed=131)), "parquet")
        stack.s3.put_object(Bucket=stack.settings.s3_bucket, Key=key, Body=body)
        stack.wait_until(
            lambda: api.task_states("ingest_new_data", run_id).get(("ingest_batch", 0)) == "running",
            180,
            "ingest_batch to start",
            every=0.2,
        )
        stack.crash_airflow()
        stack.start_airflow()
        run = stack.wait_for_run("ingest_new_data", run_id, timeout=600)

        assert run["state"] == "success", api.task_states("ingest_new_data", run_id)
        entries = [e for e in read_manifest(stack.s3, stack.settings) if e.source.key == key]
        assert [e.status for e in entries] == ["ingested"]
        assert entries[0].good_rows == 300_000
        curated = list(list_objects(stack.s3, stack.settings.s3_bucket, stack.settings.curated_prefix))
        assert len(curated) == 1
        [batch_ti] = [ti for ti in api.task_instances("ingest_new_data", run_id) if ti["task_id"] == "ingest_batch"]
        assert batch_ti["try_number"] >= 2  # the killed try, then the retry that finished
        assert stack.s3.get_object(Bucket=stack.settings.s3_bucket, Key=key)["Body"].read() == body
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
