"""Dataset versions against the real S3 server: ordered, immutable, one number per content, and
recorded where a person looks (the ingest entry, the data manifest, the MLflow run)."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.datasets import BatchSpec, generate_batch
from include.continuous_training.dataset_versions import dataset_name, version_for
from include.continuous_training.ingestion import read_manifest
from include.continuous_training.registry import tracking_client
from include.continuous_training.storage import read_json_uri
from include.continuous_training.training import assemble_training_data, train_challenger
from tests.integration.conftest import land_and_curate


@pytest.fixture
def isolated(services, empty_bucket, s3):
    from include.continuous_training.config import load_settings

    name = f"dsv-{uuid.uuid4().hex[:8]}"
    return dataclasses.replace(load_settings(), model_name=name, mlflow_experiment=name, dataset_name=name), s3


def test_the_same_content_keeps_its_version_and_new_content_gets_the_next(isolated):
    settings, s3 = isolated
    first = version_for(s3, settings, "window", "hash-a", {"rows": 10})
    assert first.label == f"{settings.dataset_name}@v1"
    assert version_for(s3, settings, "window", "hash-a").label == first.label
    assert version_for(s3, settings, "window", "hash-b").number == 2
    assert version_for(s3, settings, "window", "hash-a").details == {"rows": 10}  # the first record stands
    batch = version_for(s3, settings, "batch", "batch-1")
    assert batch.label == f"{settings.dataset_name}/batch@v1"  # batches have their own sequence


def test_concurrent_claims_never_share_a_number(isolated):
    settings, s3 = isolated
    labels: list[str] = []

    def claim(i: int) -> None:
        labels.append(version_for(s3, settings, "window", f"hash-{i}").label)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(labels)) == 6
    assert {int(label.rsplit("@v", 1)[1]) for label in labels} == set(range(1, 7))


def test_the_name_defaults_to_the_suite_file_name(isolated):
    settings, _ = isolated
    unnamed = dataclasses.replace(settings, dataset_name="")
    assert dataset_name(unnamed) == "transactions"  # the bundled expectations/transactions.json
    penguins = dataclasses.replace(unnamed, expectation_suite_path=Path("models/penguins.suite.json"))
    assert dataset_name(penguins) == "penguins"


def test_ingest_and_training_record_the_versions(isolated):
    settings, s3 = isolated
    start = datetime(2026, 11, 1, tzinfo=UTC)
    land_and_curate(
        s3,
        settings,
        {
            f"{settings.model_name}-{day}.parquet": generate_batch(
                BatchSpec(rows=1500, seed=40 + day, start=start + timedelta(days=day))
            )
            for day in (0, 1)
        },
    )
    entries = [e for e in read_manifest(s3, settings) if e.status == "ingested"]
    assert sorted(str(e.dataset_version) for e in entries) == [
        f"{settings.dataset_name}/batch@v1",
        f"{settings.dataset_name}/batch@v2",
    ]

    data = assemble_training_data(s3, settings)
    assert data["dataset_version"] == f"{settings.dataset_name}@v1"
    assert read_json_uri(s3, settings, data["manifest_uri"])["dataset_version"] == data["dataset_version"]
    assert assemble_training_data(s3, settings)["dataset_version"] == data["dataset_version"]  # same rows, same version

    model = train_challenger(s3, settings, data, dag_run_id="dsv")
    run = tracking_client(settings).get_run(model["run_id"])
    assert run.data.tags["ct.dataset_version"] == data["dataset_version"]
