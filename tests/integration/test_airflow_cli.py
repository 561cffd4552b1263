"""`airflow dags test <dag_id>` for every DAG, the way a user's CI calls it, against the real services."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.datasets import BatchSpec, generate_batch, to_bytes
from tests.integration.conftest import keys_under, land_and_curate

ROOT = Path(__file__).resolve().parents[2]
DAG_IDS = sorted(p.stem for p in (ROOT / "dags").glob("*.py"))


# What each DAG needs to find in S3 for a meaningful run (not just a skipped sensor), and where it writes.
def _landing_batch(s3, settings):
    body = to_bytes(generate_batch(BatchSpec(rows=500, seed=31)), "csv")
    s3.put_object(Bucket=settings.s3_bucket, Key=settings.landing_prefix + "cli/batch.csv", Body=body)


def _curated_batches(s3, settings):
    land_and_curate(s3, settings, {"cli/train.parquet": generate_batch(BatchSpec(rows=4000, seed=32))})


def _no_traffic(s3, settings):
    """A day without traffic: the drift DAG must record "not enough data" and succeed."""


SEEDS = {"ingest_new_data": _landing_batch, "train_and_deploy": _curated_batches, "monitor_drift": _no_traffic}
PRODUCES = {"ingest_new_data": "curated/", "train_and_deploy": "training/", "monitor_drift": "reports/drift/"}


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_airflow_dags_test_cli_succeeds(dag_id, empty_bucket, airflow_db, s3, settings):
    SEEDS[dag_id](s3, settings)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "test", dag_id],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, tail
    assert "DagRun Finished" in tail
    assert keys_under(s3, settings.s3_bucket, PRODUCES[dag_id]), f"{dag_id} produced nothing"
