"""Gates on real models: a slice regression is caught even when the headline metric looks fine.

Real MLflow and S3; the splits are written by hand so the challenger's training data can be
corrupted in one slice only while the shared holdout stays clean.
"""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pandas as pd
import pytest

from devtools.datasets import BatchSpec, generate_batch
from include.continuous_training.evaluation import decide_promotion, evaluate_challenger
from include.continuous_training.registry import promote_champion, register_challenger, tracking_client
from include.continuous_training.storage import put_bytes, put_json
from include.continuous_training.training import train_challenger


@pytest.fixture
def isolated(settings, empty_bucket):
    suffix = uuid.uuid4().hex[:8]
    return dataclasses.replace(
        settings, model_name=f"gates-{suffix}", mlflow_experiment=f"gates-{suffix}", bootstrap_samples=300
    )


def _write_splits(s3, settings, name: str, train: pd.DataFrame, validation: pd.DataFrame, holdout: pd.DataFrame):
    data = {"data_hash": name}
    for split, frame in (("train", train), ("validation", validation), ("holdout", holdout)):
        key = f"training/{name}/{split}.parquet"
        put_bytes(s3, settings.s3_bucket, key, frame.to_parquet(index=False))
        data[f"{split}_uri"] = settings.s3_uri(key)
    put_json(s3, settings.s3_bucket, f"training/{name}/manifest.json", {"note": "hand-made splits"})
    data["manifest_uri"] = settings.s3_uri(f"training/{name}/manifest.json")
    return data


def _shuffle_labels_where(frame: pd.DataFrame, column: str, value: str, seed: int) -> pd.DataFrame:
    frame = frame.copy()
    mask = frame[column] == value
    frame.loc[mask, "is_fraud"] = np.random.default_rng(seed).permutation(frame.loc[mask, "is_fraud"].to_numpy())
    return frame


def test_a_challenger_that_is_broken_on_one_slice_is_rejected(isolated, s3):
    settings = isolated
    train = generate_batch(BatchSpec(rows=12000, seed=801))
    validation = generate_batch(BatchSpec(rows=3000, seed=802))
    holdout = generate_batch(BatchSpec(rows=5000, seed=803))
    client = tracking_client(settings)

    champion_data = _write_splits(s3, settings, f"champ-{settings.model_name}", train, validation, holdout)
    champion = train_challenger(s3, settings, champion_data, dag_run_id="champion-run")
    version = register_challenger(client, settings, champion["run_id"], champion["model_id"], {"why": "test"})
    promote_champion(client, settings, version)

    broken = _write_splits(
        s3,
        settings,
        f"broken-{settings.model_name}",
        _shuffle_labels_where(train, "channel", "atm", seed=1),
        _shuffle_labels_where(validation, "channel", "atm", seed=2),
        holdout,
    )
    challenger = train_challenger(s3, settings, broken, dag_run_id="challenger-run")
    evaluation = evaluate_challenger(s3, settings, broken, challenger["model_uri"])
    record = decide_promotion(evaluation, settings)

    assert evaluation["holdout_uri"] == broken["holdout_uri"]
    assert evaluation["champion"] is not None
    assert evaluation["champion"]["version"] == version
    slices = {gate.name: gate for gate in record.gates}
    assert record.verdict == "reject"
    assert not slices["slices"].passed
    assert "channel=atm" in slices["slices"].detail
    assert record.slices["atm"]["roc_auc_delta"] < -settings.slice_tolerance
    # The headline number alone would not have caught all of it: other slices are fine.
    assert record.slices["pos"]["roc_auc_delta"] > -settings.slice_tolerance


def test_training_and_registration_are_idempotent_per_dag_run(isolated, s3):
    settings = isolated
    frames = [generate_batch(BatchSpec(rows=n, seed=s)) for n, s in ((4000, 901), (1000, 902), (1000, 903))]
    data = _write_splits(s3, settings, f"idem-{settings.model_name}", *frames)
    client = tracking_client(settings)

    first = train_challenger(s3, settings, data, dag_run_id="manual__same")
    again = train_challenger(s3, settings, data, dag_run_id="manual__same")
    v1 = register_challenger(client, settings, first["run_id"], first["model_id"], {})
    v2 = register_challenger(client, settings, again["run_id"], again["model_id"], {})

    assert again == first
    assert v1 == v2 == "1"
    assert promote_champion(client, settings, v1) == {"champion": "1", "previous_champion": None}
    assert promote_champion(client, settings, v1) == {"champion": "1", "previous_champion": None}
