"""A multiclass and a regression model through the real loop's parts: trained and logged to the real
MLflow server, evaluated and gated from S3, registered, served by the real endpoint process, answered
in the task's response shape, smoke-tested (offline vs HTTP) and logged with a numeric score."""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

from include.continuous_training.config import load_settings
from include.continuous_training.deployment import golden_records, offline_predictions, run_smoke_test
from include.continuous_training.evaluation import decide_promotion, evaluate_challenger
from include.continuous_training.records import TrainingData
from include.continuous_training.registry import load_model, promote_champion, register_challenger, tracking_client
from include.continuous_training.storage import (
    parquet_bytes,
    put_bytes,
    put_json,
    read_parquet_object,
    read_parquet_uri,
)
from include.continuous_training.training import train_challenger
from tests.integration.conftest import Endpoint, keys_under


def _wine() -> pd.DataFrame:
    bunch = datasets.load_wine(as_frame=True)
    names = np.array(["barbera", "barolo", "grignolino"])
    return bunch.frame.rename(columns=lambda c: c.replace("/", "_")).assign(target=names[bunch.target])


def _diabetes() -> pd.DataFrame:
    frame = datasets.load_diabetes(as_frame=True).frame
    return frame.assign(sex=np.where(frame["sex"] > 0, "b", "a"))


TABLES = {
    "multiclass": (_wine, ()),
    "regression": (_diabetes, ("sex",)),
}


def _served(task: str, s3: Any, tmp_path_factory: Any) -> tuple[Any, TrainingData, Endpoint, dict[str, Any]]:
    """Train on the table's splits in S3, gate, register and promote, and start an endpoint serving it."""
    load, categorical = TABLES[task]
    frame = load().sample(frac=1.0, random_state=0).reset_index(drop=True)
    suffix = f"{task}-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(
        load_settings(),
        model_name=f"tasks-{suffix}",
        mlflow_experiment=f"tasks-{suffix}",
        task=task,
        label_column="target",
        numeric_columns=tuple(c for c in frame.columns if c != "target" and c not in categorical),
        categorical_columns=categorical,
        slice_column=categorical[0] if categorical else "",
        bootstrap_samples=200,
        num_boost_round=120,
    )
    n = len(frame)
    splits = {"train": frame.iloc[: int(n * 0.6)], "validation": frame.iloc[int(n * 0.6) : int(n * 0.8)]}
    splits["holdout"] = frame.iloc[int(n * 0.8) :]
    folder = f"{settings.training_prefix}{suffix}/"
    uris = {}
    for name, split in splits.items():
        put_bytes(s3, settings.s3_bucket, f"{folder}{name}.parquet", parquet_bytes(split))
        uris[name] = settings.s3_uri(f"{folder}{name}.parquet")
    put_json(
        s3, settings.s3_bucket, f"{folder}manifest.json", {"task": task, "rows": {k: len(v) for k, v in splits.items()}}
    )
    data = TrainingData(
        data_hash=suffix,
        dataset_version=f"tasks@{suffix}",
        manifest_uri=settings.s3_uri(f"{folder}manifest.json"),
        rows={name: len(split) for name, split in splits.items()},
        train_uri=uris["train"],
        validation_uri=uris["validation"],
        holdout_uri=uris["holdout"],
    )
    model = train_challenger(s3, settings, data, dag_run_id=f"tasks-{suffix}")
    decision = decide_promotion(evaluate_challenger(s3, settings, data, model["model_uri"]), settings)
    client = tracking_client(settings)
    version = register_challenger(client, settings, model["run_id"], model["model_id"], {})
    promote_champion(client, settings, version)
    env = {
        "CT_MODEL_NAME": settings.model_name,
        "CT_TASK": task,
        "CT_SERVING_ADMIN_TOKEN": secrets.token_urlsafe(16),
        "CT_INFERENCE_FLUSH_SECONDS": "1",
    }
    endpoint = Endpoint.start(tmp_path_factory.mktemp(f"serving-{task}"), env, workers=1)
    deadline = time.monotonic() + 60
    while endpoint.served_version() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return (
        dataclasses.replace(settings, serving_url=endpoint.url, smoke_requests=40),
        data,
        endpoint,
        {
            "decision": decision,
            "version": version,
        },
    )


@pytest.fixture(scope="module", params=["multiclass", "regression"])
def served(request, services, s3, tmp_path_factory):
    settings, data, endpoint, extra = _served(request.param, s3, tmp_path_factory)
    yield request.param, settings, data, endpoint, extra
    endpoint.stop()


def test_a_served_model_answers_in_its_tasks_shape_and_matches_offline(served, s3):
    task, settings, data, endpoint, extra = served
    decision = extra["decision"]
    assert decision.verdict == "promote", decision.summary()
    assert decision.gate_metric == {"multiclass": "macro_f1", "regression": "rmse"}[task]
    assert endpoint.served_version() == extra["version"]

    model = load_model(f"models:/{settings.model_name}/{extra['version']}")
    assert model.spec.task == task
    holdout = read_parquet_uri(s3, settings, data["holdout_uri"])
    records = golden_records(holdout, model.spec.feature_names, 5, seed=3)
    expected, labels = offline_predictions(model, pd.DataFrame.from_records(records), settings.decision_threshold)

    status, single = endpoint.post("/predict", records[0])
    assert status == 200, single
    status, batch = endpoint.post("/predict", {"records": records})
    assert status == 200, batch
    answers = batch["predictions"]
    if task == "multiclass":
        assert set(single) == {"prediction_id", "label", "probability", "probabilities", "model_version"}
        assert set(single["probabilities"]) == {"barbera", "barolo", "grignolino"}
        assert labels is not None
        for answer, offline, label in zip(answers, expected, labels, strict=True):
            assert answer["label"] == label
            assert answer["probability"] == pytest.approx(max(offline.values()), abs=1e-6)
            assert answer["probabilities"] == pytest.approx(offline, abs=1e-6)
            assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    else:
        assert set(single) == {"prediction_id", "prediction", "model_version"}
        for answer, offline in zip(answers, expected, strict=True):
            assert answer["prediction"] == pytest.approx(offline, rel=1e-6)
            assert answer["prediction"] > 1.0  # disease progression, not a probability

    report = run_smoke_test(s3, settings, data, extra["version"])
    assert report.passed, report.reason()
    assert (report.task, report.requests, report.errors) == (task, min(40, len(holdout)), 0)
    assert report.max_abs_diff <= 1e-6

    # The inference log keeps one numeric score per row (P(predicted class) / the prediction) and the label.
    wanted = {answer["prediction_id"]: answer for answer in answers}
    logged = pd.DataFrame()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        keys = keys_under(s3, settings.s3_bucket, settings.inference_prefix)
        frames = [read_parquet_object(s3, settings.s3_bucket, key)[0] for key in keys]
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["prediction_id"])
        logged = rows[rows["prediction_id"].isin(wanted)]
        if len(logged) == len(wanted):
            break
        time.sleep(0.5)
    assert len(logged) == len(wanted)
    assert pd.api.types.is_float_dtype(logged["score"])
    for row in logged.itertuples():
        answer = wanted[row.prediction_id]
        if task == "multiclass":
            assert (row.score, row.label) == (pytest.approx(answer["probability"]), answer["label"])
        else:
            assert row.score == pytest.approx(answer["prediction"])
