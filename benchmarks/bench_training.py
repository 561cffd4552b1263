"""How much the train_challenger task costs on top of a bare ``xgboost.train`` script, same data and params.

For each ``--rows`` size: starts the loopback services, curates one generated batch, assembles the
splits, then times in one process, alternating, ``--repeats`` times each:

- ``bare`` (the baseline): what a bare script does with the data in memory: ``xgboost.DMatrix`` from
  the pandas frames (categoricals as ``category``), then ``xgboost.train`` with the same params;
- ``fit``: our ``fit_booster`` (feature encoding + DMatrix + train), data already in memory;
- ``task``: the whole ``train_challenger`` (read the splits from S3, fit, log params, per-round
  metrics, the model, the reference sample and the manifest to MLflow), each time as a new DAG run.

Figures are ratios against ``bare`` measured in the same run (these machines are noisy).

    python -m benchmarks.bench_training --rows 100000 1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import Row, emit, json_argument


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target", type=float, default=1.25)
    json_argument(parser)
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for n in args.rows:
        rows += measure(n, args.repeats if n < 1_000_000 else max(1, args.repeats - 1), args.target)
    emit(rows, args.json)
    return rows


def measure(n_rows: int, repeats: int, target: float) -> list[Row]:

    import xgboost as xgb

    from devtools.datasets import BatchSpec, generate_batch, to_bytes
    from devtools.services import LocalServices
    from include.continuous_training.config import load_settings
    from include.continuous_training.devices import select_device
    from include.continuous_training.features import FeatureSpec
    from include.continuous_training.ingestion import find_new_objects, ingest_object
    from include.continuous_training.storage import read_parquet_uri, s3_client
    from include.continuous_training.training import (
        assemble_training_data,
        fit_booster,
        train_challenger,
        training_params,
    )

    with tempfile.TemporaryDirectory() as tmp, LocalServices(state_dir=Path(tmp)) as services:
        os.environ.update(services.env())
        suffix = uuid.uuid4().hex[:6]
        settings = dataclasses.replace(
            load_settings(), model_name=f"bench-{suffix}", mlflow_experiment=f"bench-{suffix}"
        )
        s3 = s3_client(settings)
        frame = generate_batch(BatchSpec(rows=n_rows, seed=1, start=datetime(2026, 11, 1, tzinfo=UTC), hours=24 * 7))
        s3.put_object(
            Bucket=settings.s3_bucket, Key=settings.landing_prefix + "bench.parquet", Body=to_bytes(frame, "parquet")
        )
        for ref in find_new_objects(s3, settings):
            ingest_object(s3, settings, ref, run_id="bench")
        data = assemble_training_data(s3, settings)
        train = read_parquet_uri(s3, settings, data["train_uri"])
        validation = read_parquet_uri(s3, settings, data["validation_uri"])
        device, why = select_device()
        params, rounds, patience = training_params(settings, None, device)
        spec = FeatureSpec.from_frame(train, settings)

        def as_script(frame: Any) -> Any:
            features = frame[list(settings.feature_columns)].copy()
            for column in settings.categorical_columns:
                features[column] = features[column].astype("category")
            return features

        train_x, valid_x = as_script(train), as_script(validation)
        label = settings.label_column

        def bare() -> None:
            dtrain = xgb.DMatrix(train_x, label=train[label], enable_categorical=True)
            dvalid = xgb.DMatrix(valid_x, label=validation[label], enable_categorical=True)
            xgb.train(
                params,
                dtrain,
                rounds,
                evals=[(dvalid, "validation")],
                early_stopping_rounds=patience,
                verbose_eval=False,
            )

        def fit() -> None:
            fit_booster(train, validation, spec, params, rounds, patience)

        def task() -> None:
            train_challenger(s3, settings, data, dag_run_id=f"bench-{uuid.uuid4().hex}")

        timings: dict[str, list[float]] = {"bare": [], "fit": [], "task": []}
        for _ in range(repeats):
            for name, call in (("bare", bare), ("fit", fit), ("task", task)):
                started = time.perf_counter()
                call()
                timings[name].append(time.perf_counter() - started)

    base = statistics.median(timings["bare"])
    print(
        f"rows={n_rows} (train {data['rows']['train']}, validation {data['rows']['validation']}), "
        f"device={device} ({why}), repeats={repeats}"
    )
    for name, values in timings.items():
        median = statistics.median(values)
        print(
            f"{name:5s} median {median:7.2f}s  ratio vs bare {median / base:5.2f}x  "
            f"runs {[round(v, 2) for v in values]}"
        )
    task_s, fit_s = statistics.median(timings["task"]), statistics.median(timings["fit"])
    return [
        Row(
            "training",
            f"train_challenger task, {n_rows:,} rows ({device}): S3 read + DMatrix + fit + MLflow logging",
            task_s,
            base,
            "s",
            "bare xgboost.train script",
            f"<= {target:g}x",
            task_s / base <= target,
            note=f"fit alone {fit_s / base:.2f}x",
        )
    ]


if __name__ == "__main__":
    main()
