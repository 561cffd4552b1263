"""The feedback and training prefixes are settings: the code reads and writes where they say, on the real S3."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime

from devtools.datasets import BatchSpec, generate_batch
from tests.integration.conftest import keys_under, land_and_curate


def _parquet(frame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def test_late_labels_are_read_from_the_feedback_prefix(empty_bucket, settings):
    import pandas as pd

    from include.continuous_training.drift import read_feedback

    moved = dataclasses.replace(settings, feedback_prefix="labels/late/")
    mine = pd.DataFrame({"prediction_id": ["p1", "p2"], settings.label_column: [1, 0]})
    other = pd.DataFrame({"prediction_id": ["x"], settings.label_column: [1]})
    empty_bucket.put_object(Bucket=settings.s3_bucket, Key="labels/late/a.parquet", Body=_parquet(mine))
    empty_bucket.put_object(Bucket=settings.s3_bucket, Key="feedback/elsewhere.parquet", Body=_parquet(other))

    assert sorted(read_feedback(empty_bucket, moved)["prediction_id"]) == ["p1", "p2"]
    assert sorted(read_feedback(empty_bucket, settings)["prediction_id"]) == ["x"]


def test_training_splits_are_written_under_the_training_prefix(empty_bucket, settings):
    from include.continuous_training.training import assemble_training_data

    moved = dataclasses.replace(settings, training_prefix="splits/v2/")
    batch = generate_batch(BatchSpec(rows=2000, seed=31, start=datetime(2026, 11, 1, tzinfo=UTC)))
    land_and_curate(empty_bucket, moved, {"day1.parquet": batch})

    data = assemble_training_data(empty_bucket, moved)

    folder = f"splits/v2/{data['data_hash']}/"
    assert data["train_uri"] == moved.s3_uri(f"{folder}train.parquet")
    assert data["validation_uri"] == moved.s3_uri(f"{folder}validation.parquet")
    assert data["holdout_uri"] == moved.s3_uri(f"{folder}holdout.parquet")
    assert keys_under(empty_bucket, settings.s3_bucket, folder)
    assert not keys_under(empty_bucket, settings.s3_bucket, "training/")
