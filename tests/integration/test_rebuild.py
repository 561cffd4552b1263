"""Rebuild a registered version from its recorded inputs (real S3, real MLflow): identical on CPU, and a
clear "cannot rebuild" when a curated object version is gone."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from devtools.datasets import BatchSpec, generate_batch, to_bytes
from devtools.services import PROJECT_ROOT, subprocess_env
from include.continuous_training.ingestion import read_manifest
from include.continuous_training.rebuild import CannotRebuild, rebuild_version
from include.continuous_training.registry import promote_champion, register_challenger, tracking_client
from include.continuous_training.training import assemble_training_data, train_challenger
from tests.integration.conftest import land_and_curate, run_dag

DAY = datetime(2026, 11, 1, tzinfo=UTC)


def _train_and_register(s3, settings, day: int, rows: int) -> str:
    batch = generate_batch(BatchSpec(rows=rows, seed=300 + day, start=DAY + timedelta(days=day)))
    land_and_curate(s3, settings, {f"{settings.model_name}-{day}.parquet": batch})
    model = train_challenger(s3, settings, assemble_training_data(s3, settings), dag_run_id=f"rebuild-test-{day}")
    client = tracking_client(settings)
    version = register_challenger(client, settings, model["run_id"], model["model_id"], {})
    promote_champion(client, settings, version)
    return version


@pytest.fixture
def two_versions(services, empty_bucket, s3):
    """v1 on day 0, then v2 on days 0-1 promoted over it; hyper-parameters from the settings (max_depth 4)."""
    from include.continuous_training.config import load_settings

    name = f"rebuild-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(load_settings(), model_name=name, mlflow_experiment=name, max_depth=4, seed=7)
    return settings, _train_and_register(s3, settings, 0, 3000), _train_and_register(s3, settings, 1, 3000)


def test_v1_rebuilt_after_v2_was_promoted_is_identical(two_versions, s3, dagbag, airflow_db, monkeypatch):
    settings, v1, _ = two_versions
    # The settings moved on since v1 (a new default depth and seed): the rebuild uses what v1 recorded.
    now = dataclasses.replace(settings, max_depth=8, seed=1)
    verdict = rebuild_version(s3, now, v1)
    print(verdict.summary())
    assert verdict.verdict == "identical", verdict.summary()
    assert verdict.max_abs_diff <= 1e-6
    assert verdict.data_hash_rebuilt == verdict.data_hash_recorded
    assert verdict.inputs["seed"] == 7
    assert verdict.inputs["params"]["max_depth"] == "4"
    assert len(verdict.inputs["objects"]) == 1  # v1's window held the first batch only
    client = tracking_client(settings)
    assert (
        client.get_model_version(settings.model_name, v1)
        .tags["ct.rebuild_verdict"]
        .startswith(f"{settings.model_name} v{v1}: IDENTICAL")
    )
    run = client.get_run(verdict.rebuild_run_id)
    assert run.data.tags["ct.rebuild_of"] == f"{settings.model_name}/{v1}"
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == "2"  # nothing moved

    # The command a person runs.
    env = subprocess_env({"CT_MODEL_NAME": settings.model_name, "CT_MODEL": ""})
    done = subprocess.run(
        [sys.executable, "-m", "include.continuous_training.rebuild", "--version", v1],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "IDENTICAL" in done.stdout

    # The DAG (Param `version`), as a user triggers it from the UI.
    monkeypatch.setenv("CT_MODEL_NAME", settings.model_name)
    monkeypatch.setenv("CT_MLFLOW_EXPERIMENT", settings.mlflow_experiment)
    ran = run_dag(dagbag, "rebuild_model", run_conf={"version": v1})
    assert ran.state == "success"
    assert ran.states_of("rebuild_version") == {-1: "success"}


def test_a_deleted_curated_object_stops_the_rebuild_naming_it(two_versions, s3):
    settings, v1, _ = two_versions
    first = next(e for e in read_manifest(s3, settings) if e.source.key.endswith("-0.parquet"))
    assert first.curated_uri is not None
    key = first.curated_uri.removeprefix(f"s3://{settings.s3_bucket}/")
    body = s3.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=settings.s3_bucket, Key=key)
    try:
        with pytest.raises(
            CannotRebuild, match=rf"cannot rebuild: curated object s3://{settings.s3_bucket}/{key} with ETag"
        ):
            rebuild_version(s3, settings, v1)
    finally:  # the bucket is shared by the session's tests: every recorded batch must be readable again
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)


def test_an_overwritten_curated_object_is_read_at_its_recorded_version_in_a_versioned_bucket(services, s3):
    """Where the bucket is versioned (as in production), an overwritten object is found by its ETag."""
    from include.continuous_training.config import load_settings

    bucket = f"ct-versioned-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    name = f"rebuild-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(load_settings(), model_name=name, mlflow_experiment=name, s3_bucket=bucket)
    v1 = _train_and_register(s3, settings, 0, 3000)
    entry = next(iter(read_manifest(s3, settings)))
    assert entry.curated_uri is not None
    key = entry.curated_uri.removeprefix(f"s3://{bucket}/")
    other = generate_batch(BatchSpec(rows=100, seed=1))
    s3.put_object(Bucket=bucket, Key=key, Body=to_bytes(other, "parquet"))  # someone overwrote it
    verdict = rebuild_version(s3, settings, v1)
    assert verdict.verdict == "identical", verdict.summary()
    assert verdict.inputs["objects"][0]["version_id"] is not None
