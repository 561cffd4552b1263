"""Assemble the training data from curated batches, and train the XGBoost challenger.

- :func:`assemble_training_data` reads the curated batches, cuts the training window (anchored on the
  newest event at or before the run's time, so no batch can push it), records a data manifest (the
  window, every batch in or out and why, ETags, row counts, a content hash), checks the window did
  not lose most of the previous training's rows, and makes a time-based split: the newest rows are
  the holdout, the slice before them validation, the rest train. The splits are written to
  ``training/<data_hash>/`` so a re-run writes the same objects, and only URIs move on.
- :func:`train_challenger` trains with ``hist`` and early stopping on validation, on ``cuda`` when
  a CUDA device is visible (:func:`select_device`) and on ``cpu`` otherwise, and logs everything a
  reviewer needs to MLflow: params, per-round metrics, the model in XGBoost's UBJ format with its
  feature spec, signature and input example, the data manifest, git commit, library versions, and the
  reference sample the drift DAG compares traffic with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from include.continuous_training.config import Settings
from include.continuous_training.devices import cuda_device_count, select_device
from include.continuous_training.errors import ConfigurationError, DataError, NothingToDo
from include.continuous_training.features import (
    FEATURE_SPEC_FILE,
    MANIFEST_ARTIFACT,
    TUNABLE_PARAMS,
    FeatureSpec,
    configured_columns,
    label_classes,
    native,
)
from include.continuous_training.records import TrainedModel, TrainingData
from include.continuous_training.storage import (
    S3Client,
    key_of,
    parquet_bytes,
    put_bytes,
    put_json,
    read_json_uri,
    read_parquet_object,
    read_parquet_uri,
)
from include.continuous_training.validation import nullable_features

if TYPE_CHECKING:
    import pandas as pd
    import xgboost as xgb

log = logging.getLogger(__name__)

MODEL_NAME_IN_RUN = "model"


class TrainingDataError(DataError):
    """The curated data cannot make a sound training set (too few rows, one class only, …)."""


class NoCuratedData(TrainingDataError):
    """Nothing has been curated yet (a fresh installation), as opposed to a window without usable data."""


class NothingCuratedYet(NothingToDo):
    """A scheduled tick before anything was ever curated: a fresh installation is not an error."""


# -- assembling the data --------------------------------------------------------------------------
class WindowShrank(TrainingDataError):
    """The window holds far fewer rows than the previous training's (``CT_WINDOW_SHRINK_ACTION=fail``)."""


@dataclass(frozen=True)
class TrainingWindow:
    """Where a training window lies, and why there: ``days`` ending at the newest event at or before
    ``not_after`` (the run's time). Timestamps are tz-naive UTC, as curated data holds them."""

    start: pd.Timestamp
    end: pd.Timestamp
    days: int
    not_after: pd.Timestamp

    def contains(self, times: pd.Series) -> pd.Series:
        return (times > self.start) & (times <= self.end)

    def describe(self) -> str:
        return f"{self.start.isoformat()} .. {self.end.isoformat()} ({self.days} days)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "days": self.days,
            "anchor": "newest event at or before not_after",
        }


def training_window(
    frames: Sequence[pd.DataFrame], timestamp_column: str, days: int, not_after: datetime
) -> TrainingWindow:
    """The window over ``frames``: it ends at their newest event at or before ``not_after``.

    Anchored there, and never on the newest event overall, one batch dated far ahead (2099) cannot
    drag the window away from every other batch: rows after ``not_after`` are simply out. Raises
    :class:`TrainingDataError` when no event lies at or before ``not_after``.
    """
    import pandas as pd

    limit = pd.Timestamp(not_after)
    limit = limit.tz_convert("UTC").tz_localize(None) if limit.tzinfo else limit
    newest = [times[times <= limit].max() for times in (frame[timestamp_column] for frame in frames)]
    candidates = [t for t in newest if not pd.isna(t)]
    if not candidates:
        total = sum(len(frame) for frame in frames)
        raise TrainingDataError(
            f"no curated event at or before {limit.isoformat()} (the run's time): all {total:,} curated rows "
            "lie after it or have no time; nothing to train on"
        )
    end = max(candidates)
    return TrainingWindow(start=end - pd.Timedelta(days=days), end=end, days=days, not_after=limit)


def batch_in_window(frame: pd.DataFrame, timestamp_column: str, window: TrainingWindow) -> dict[str, Any]:
    """How many of a batch's rows the window holds, how many lie before / after it, and why it is out."""
    times = frame[timestamp_column]
    inside = int(window.contains(times).sum())
    before, after = int((times <= window.start).sum()), int((times > window.end).sum())
    counts: dict[str, Any] = {
        "rows_in_window": inside,
        "rows_before_start": before,
        "rows_after_end": after,
        "in_window": inside > 0,
    }
    if inside:
        return counts
    if not len(frame):
        reason = "no rows"
    elif after == len(frame):
        reason = "all events after the window end"
    elif before == len(frame):
        reason = "no events in window: all before its start"
    else:
        reason = f"no events in window: {before:,} before its start, {after:,} after its end"
    return {**counts, "out_reason": reason}


@dataclass(frozen=True)
class WindowShrinkCheck:
    """The window against the previous training's: the inputs, the threshold, the verdict and why."""

    rows: int
    previous_rows: int | None
    previous_manifest_uri: str | None
    tolerance: float
    action: str
    verdict: Literal["ok", "shrank", "not compared"]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def check_window_shrink(
    rows: int,
    window: TrainingWindow,
    previous: dict[str, Any] | None,
    previous_uri: str | None,
    settings: Settings,
) -> WindowShrinkCheck:
    """Did the window lose most of its rows compared with the previous training (``previous``, its manifest)?

    Compared only when the previous window had the same length: a run asking for a shorter
    ``window_days`` means to train on less. ``CT_WINDOW_SHRINK_TOLERANCE=0`` turns the check off.
    """
    tolerance, action = settings.window_shrink_tolerance, settings.window_shrink_action

    def record(verdict: Literal["ok", "shrank", "not compared"], reason: str, before: int | None) -> WindowShrinkCheck:
        return WindowShrinkCheck(rows, before, previous_uri, tolerance, action, verdict, reason)

    if tolerance <= 0:
        return record("not compared", "CT_WINDOW_SHRINK_TOLERANCE=0: the check is off", None)
    if previous is None:
        return record("not compared", "no previous training under the training prefix", None)
    before = sum(int(n) for n in previous.get("rows", {}).values())
    days = previous.get("window", {}).get("days")
    if days != window.days:
        return record("not compared", f"the previous training used a {days}-day window, this one {window.days}", before)
    share = rows / before if before else 1.0
    figures = f"window {window.describe()} holds {rows:,} rows, the previous training had {before:,} ({share:.0%})"
    if share >= tolerance:
        return record("ok", figures, before)
    return record(
        "shrank",
        f"{figures}: below CT_WINDOW_SHRINK_TOLERANCE={tolerance:g} of it (previous manifest {previous_uri})",
        before,
    )


def latest_training_manifest(
    client: S3Client, settings: Settings, other_than: str | None = None
) -> tuple[str, dict[str, Any]] | None:
    """The newest ``manifest.json`` under the training prefix (by write time), and its URI; None if none.

    ``other_than``: a data hash whose folder is skipped (a re-run of the same data compares with the
    training before it, not with itself). S3's ``LastModified`` has whole seconds: manifests written in
    the same second are told apart by the ``written_at`` they record (microseconds).
    """
    found: list[tuple[datetime, str]] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.s3_bucket, Prefix=settings.training_prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith("/manifest.json") or (other_than and key.endswith(f"/{other_than}/manifest.json")):
                continue
            found.append((item["LastModified"], key))
    if not found:
        return None
    last = max(modified for modified, _ in found)
    newest = [read_json_uri(client, settings, settings.s3_uri(key)) | {"_key": key} for m, key in found if m == last]
    manifest = max(newest, key=lambda m: str(m.get("written_at", "")))
    key = manifest.pop("_key")
    return settings.s3_uri(key), manifest


class ColumnNotInCuratedData(ConfigurationError):
    """A column the settings name is not in a curated batch: the setting (or the suite) is wrong."""


def configured_columns_of(frame: pd.DataFrame, source_key: str, curated_key: str, settings: Settings) -> pd.DataFrame:
    """The columns of a curated batch that the settings name (label, id, event time, features), in that order.

    Other columns are left out of the training data: a pass-through column can differ in dtype from
    batch to batch (a datetime in Parquet, text in CSV), and training does not read it. Raises
    :class:`ColumnNotInCuratedData` naming the setting when a configured column is absent.
    """
    named = configured_columns(settings)
    missing = [name for name in named if name not in frame.columns]
    if missing:
        which = "; ".join(f"{name!r} (from {named[name]})" for name in missing)
        raise ColumnNotInCuratedData(
            f"configured column(s) {which} absent from the curated batch s3://{settings.s3_bucket}/{curated_key} "
            f"(from {source_key}), which has {sorted(map(str, frame.columns))}: fix the setting, or the suite "
            "(CT_EXPECTATION_SUITE) that let such batches in; nothing written"
        )
    return frame[list(named)]


def assemble_training_data(
    client: S3Client,
    settings: Settings,
    window_days: int | None = None,
    not_after: datetime | None = None,
) -> TrainingData:
    """Build train / validation / holdout from curated batches; return their URIs and the manifest.

    The window reaches back ``window_days`` (default ``CT_TRAINING_WINDOW_DAYS``) from the newest
    curated event at or before ``not_after`` (the run's time; default now): rows after it are out,
    so no batch can push the window. The manifest states the window and, for every curated batch,
    whether it is in and why not. A window holding less than ``CT_WINDOW_SHRINK_TOLERANCE`` of the
    previous training's rows raises :class:`WindowShrank` (``CT_WINDOW_SHRINK_ACTION=fail``, writing
    nothing) or logs a warning (``warn``).
    """
    import pandas as pd

    from include.continuous_training.ingestion import read_manifest

    days = window_days or settings.training_window_days
    batches = [entry for entry in read_manifest(client, settings) if entry.status == "ingested" and entry.curated_uri]
    if not batches:
        raise NoCuratedData("no curated batches yet: ingest data before training")
    ts, row_id = settings.event_time_column, settings.row_id_column
    frames: list[pd.DataFrame] = []
    used: list[dict[str, Any]] = []
    for entry in batches:
        assert entry.curated_uri is not None
        key = key_of(settings, entry.curated_uri)
        frame, etag = read_parquet_object(client, settings.s3_bucket, key)
        frames.append(configured_columns_of(frame, entry.source.key, key, settings))
        used.append(
            {
                "batch_id": entry.batch_id,
                "source_key": entry.source.key,
                "curated_key": key,
                "curated_etag": etag,
                "rows": len(frame),
            }
        )
    window = training_window(frames, ts, days, not_after or datetime.now(UTC))
    for batch, frame in zip(used, frames, strict=True):
        batch.update(batch_in_window(frame, ts, window))
    data = pd.concat([frame[window.contains(frame[ts])] for frame in frames], ignore_index=True)
    del frames
    data = data.drop_duplicates(subset=[row_id], keep="last")
    data = data.sort_values([ts, row_id], kind="mergesort").reset_index(drop=True)
    start, end = window.start, window.end
    out = [b for b in used if not b["in_window"]]
    after_end = sum(int(b["rows_after_end"]) for b in used)
    log.info(
        "training window %s, anchored on the newest event at or before %s: %d rows from %d of %d curated "
        "batches; %d rows after the window end left out",
        window.describe(),
        window.not_after.isoformat(),
        len(data),
        len(used) - len(out),
        len(used),
        after_end,
    )
    for batch in out:
        log.info("batch %s (%s) is out of the window: %s", batch["batch_id"], batch["source_key"], batch["out_reason"])

    classes = label_classes(data[settings.label_column], settings)  # the label fits the task, before any split
    n = len(data)
    n_holdout = round(n * settings.holdout_fraction)
    n_valid = round(n * settings.validation_fraction)
    splits = {
        "train": data.iloc[: n - n_holdout - n_valid],
        "validation": data.iloc[n - n_holdout - n_valid : n - n_holdout],
        "holdout": data.iloc[n - n_holdout :],
    }
    manifest: dict[str, Any] = {
        "batches": sorted(used, key=lambda b: str(b["batch_id"])),
        "window": window.as_dict(),
        "rows": {name: len(split) for name, split in splits.items()},
        **label_summary(splits, settings, classes),
        "features": list(settings.feature_columns),
        "label": settings.label_column,
        "split": {
            "holdout_fraction": settings.holdout_fraction,
            "validation_fraction": settings.validation_fraction,
            "order": [ts, row_id],
        },
    }
    # The hash covers the data and how it was cut, not the run's time or the previous training:
    # a later run over the same rows writes the same folder.
    data_hash = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:20]
    manifest["data_hash"] = data_hash
    manifest["window"]["not_after"] = window.not_after.isoformat()
    manifest["written_at"] = datetime.now(UTC).isoformat()  # orders manifests written in the same second

    previous_uri, previous = latest_training_manifest(client, settings, other_than=data_hash) or (None, None)
    shrink = check_window_shrink(n, window, previous, previous_uri, settings)
    manifest["window_check"] = shrink.as_dict()
    if shrink.verdict == "shrank":
        out_list = "; ".join(f"{b['source_key']}: {b['out_reason']}" for b in out[:3]) or "none wholly out"
        message = f"{shrink.reason}; batches out of the window: {out_list}"
        if settings.window_shrink_action == "fail":
            raise WindowShrank(
                f"{message}; nothing written. If the smaller window is right, set CT_WINDOW_SHRINK_ACTION=warn "
                "(or CT_WINDOW_SHRINK_TOLERANCE lower) and run again"
            )
        log.warning("WINDOW SHRANK (CT_WINDOW_SHRINK_ACTION=warn, training anyway): %s", message)
    else:
        log.info("window check: %s (%s)", shrink.verdict, shrink.reason)

    check_splits(splits, settings, classes, f"{start} .. {end}")

    from include.continuous_training.dataset_versions import version_for

    in_window = [str(b["batch_id"]) for b in used if b["in_window"]]
    version = version_for(
        client,
        settings,
        "window",
        data_hash,
        {"rows": n, "start": start.isoformat(), "end": end.isoformat(), "batches": in_window},
    )
    manifest["dataset_version"] = version.label  # outside the hash: it names the hash
    log.info(
        "training data %s: %d rows, %s .. %s, %d curated batch(es), content hash %s",
        version.label,
        n,
        start.isoformat(),
        end.isoformat(),
        len(in_window),
        data_hash,
    )
    folder = f"{settings.training_prefix}{data_hash}/"
    uris = {}
    for name, split in splits.items():
        key = f"{folder}{name}.parquet"
        put_bytes(client, settings.s3_bucket, key, parquet_bytes(split))
        uris[name] = settings.s3_uri(key)
    manifest_key = f"{folder}manifest.json"
    put_json(client, settings.s3_bucket, manifest_key, manifest)
    return TrainingData(
        data_hash=data_hash,
        dataset_version=version.label,
        manifest_uri=settings.s3_uri(manifest_key),
        rows={name: len(split) for name, split in splits.items()},
        train_uri=uris["train"],
        validation_uri=uris["validation"],
        holdout_uri=uris["holdout"],
    )


def label_summary(splits: dict[str, pd.DataFrame], settings: Settings, classes: tuple[Any, ...]) -> dict[str, Any]:
    """The label per split for the manifest: binary the positive rate, multiclass the class counts,
    regression the mean and spread (binary keeps the key it always had, so its data hash is unchanged)."""
    label = settings.label_column
    if settings.task == "binary":
        positive = classes[1]
        return {"positive_rate": {name: float((split[label] == positive).mean()) for name, split in splits.items()}}
    if settings.task == "multiclass":
        counts = {name: {str(c): int((split[label] == c).sum()) for c in classes} for name, split in splits.items()}
        return {"task": settings.task, "classes": list(classes), "class_counts": counts}
    stats = {
        name: {"mean": float(split[label].mean()), "std": float(split[label].std(ddof=0))}
        for name, split in splits.items()
    }
    return {"task": settings.task, "label_stats": stats}


def check_splits(splits: dict[str, pd.DataFrame], settings: Settings, classes: tuple[Any, ...], window: str) -> None:
    """Every split can train or judge a model of ``settings.task``; else :class:`TrainingDataError`.

    At least 50 rows each; binary: both classes in each split; multiclass: the train split holds
    every class of the window, the others at least two; regression: a train label that varies.
    """
    label, task = settings.label_column, settings.task
    for name, split in splits.items():
        found = sorted({str(native(v)) for v in split[label].unique()})
        problem = None
        if len(split) < 50:
            problem = "need >= 50 rows"
        elif task == "binary" and len(found) != 2:
            problem = f"need both classes {[str(c) for c in classes]}"
        elif task == "multiclass" and name == "train" and len(found) != len(classes):
            missing = sorted({str(c) for c in classes} - set(found))
            problem = f"the train split lacks classes {missing} that later rows hold: the model could not learn them"
        elif task == "multiclass" and len(found) < 2:
            problem = "need at least two classes"
        elif task == "regression" and name == "train" and split[label].nunique() < 2:
            problem = "the label is constant: nothing to learn"
        if problem is not None:
            shown = f"classes {found[:10]}" if task != "regression" else "a numeric label"
            raise TrainingDataError(
                f"{name} split has {len(split)} rows and {shown} in label column {label!r} (CT_TASK={task}) "
                f"in the window {window}: {problem}; ingest more data or widen window_days"
            )


# -- training ----------------------------------------------------------------------------------------
OBJECTIVES = {
    # task: (objective, eval metrics; early stopping watches the last)
    "binary": ("binary:logistic", ["auc", "logloss"]),
    "multiclass": ("multi:softprob", ["mlogloss"]),
    "regression": ("reg:squarederror", ["rmse"]),
}


def training_params(
    settings: Settings, overrides: dict[str, Any] | None, device: str, num_class: int | None = None
) -> tuple[dict[str, Any], int, int]:
    """XGBoost params, boosting rounds and early-stopping patience, with validated overrides.

    The objective follows ``CT_TASK``: ``binary:logistic``, ``multi:softprob`` (``num_class``: the
    spec's classes) or ``reg:squarederror``; early stopping watches logloss, mlogloss or rmse.
    ``scale_pos_weight`` is a binary-only override.
    """
    overrides = dict(overrides or {})
    if "scale_pos_weight" in overrides and settings.task != "binary":
        raise ConfigurationError(
            f"hyper-parameter scale_pos_weight applies to binary models only, not CT_TASK={settings.task}"
        )
    if settings.task == "multiclass" and (num_class is None or num_class < 2):
        raise ConfigurationError(f"CT_TASK=multiclass needs the number of classes, got num_class={num_class}")
    unknown = sorted(set(overrides) - set(TUNABLE_PARAMS))
    if unknown:
        raise ConfigurationError(f"unknown hyper-parameter(s) {unknown}; allowed: {sorted(TUNABLE_PARAMS)}")
    try:
        cleaned = {k: TUNABLE_PARAMS[k](v) for k, v in overrides.items()}
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"hyper-parameter overrides {overrides}: {error}") from error
    rounds = int(cleaned.pop("num_boost_round", settings.num_boost_round))
    patience = int(cleaned.pop("early_stopping_rounds", settings.early_stopping_rounds))
    objective, eval_metric = OBJECTIVES[settings.task]
    params: dict[str, Any] = {
        "objective": objective,
        "eval_metric": list(eval_metric),
        **({"num_class": num_class} if settings.task == "multiclass" else {}),
        "tree_method": "hist",
        "device": device,
        "max_depth": settings.max_depth,
        "learning_rate": settings.learning_rate,
        "seed": settings.seed,
        "nthread": os.cpu_count() or 1,
        **cleaned,
    }
    return params, rounds, patience


def fit_booster(
    train: pd.DataFrame, validation: pd.DataFrame, spec: FeatureSpec, params: dict[str, Any], rounds: int, patience: int
) -> tuple[xgb.Booster, dict[str, dict[str, list[float]]]]:
    """The bare training call (also what the benchmark compares against ``xgboost.train``)."""
    import xgboost as xgb

    dtrain, dvalid = spec.dmatrix(train), spec.dmatrix(validation)
    history: dict[str, dict[str, list[float]]] = {}
    # Validation only: AUC on the training set every round costs a sort of it per round, and early
    # stopping never reads it.
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=rounds,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=patience,
        evals_result=history,
        verbose_eval=False,
    )
    return booster, history


def run_reason(reason: str, run_type: Any, report_uri: str | None) -> str:
    """Why this training run happened, in words for MLflow: the Param, else what triggered it."""
    if reason:
        return reason
    if report_uri:
        return f"drift detected (report {report_uri})"
    kind = str(getattr(run_type, "value", run_type))
    return {"asset_triggered": "new curated data", "scheduled": "weekly schedule", "manual": "manual trigger"}.get(
        kind, kind
    )


def git_commit(settings: Settings) -> str:
    """The deployed code's commit: ``CT_GIT_COMMIT`` (set by images), else ``git rev-parse``."""
    if settings.git_commit:
        return settings.git_commit
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def xgb_version() -> str:
    from importlib.metadata import version

    return version("xgboost")


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["xgboost", "mlflow", "pandas", "numpy", "scikit-learn", "great_expectations", "apache-airflow"]
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def find_existing_run(settings: Settings, dag_run_id: str, data_hash: str) -> str | None:
    """A finished training run for this DAG run and data (so a re-run trains nothing new)."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        return None
    runs = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`ct.dag_run_id` = '{_quote(dag_run_id)}' and tags.`ct.data_hash` = '{data_hash}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def train_challenger(
    client: S3Client,
    settings: Settings,
    data: TrainingData,
    dag_run_id: str,
    overrides: dict[str, Any] | None = None,
    reason: str = "manual",
    device_probe: Any = cuda_device_count,
) -> TrainedModel:
    """Train, log to MLflow, and return ``{run_id, model_uri, device, ...}`` (small, for XCom)."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    device, why = select_device(device_probe)
    # Concurrently: is there a finished run of this DAG run already, and the two splits
    # (HTTP, S3 GET and Parquet decoding all release the GIL).
    with ThreadPoolExecutor(max_workers=2) as pool:
        lookup = pool.submit(find_existing_run, settings, dag_run_id, data["data_hash"])
        train_read = pool.submit(read_parquet_uri, client, settings, data["train_uri"])
        validation = read_parquet_uri(client, settings, data["validation_uri"])
        existing = lookup.result()
        train = train_read.result()
    if existing:
        log.info("DAG run %s already trained run %s on data %s: reusing it", dag_run_id, existing, data["data_hash"])
        return _run_summary(existing)
    log.info("training on %s: %s", device, why)
    spec = FeatureSpec.from_frame(train, settings, nullable=nullable_features(settings))
    params, rounds, patience = training_params(settings, overrides, device, len(spec.classes) or None)
    features = train[list(spec.feature_names)]
    reference = features.sample(n=min(settings.reference_sample_rows, len(features)), random_state=settings.seed)

    tags = {
        "ct.dag_run_id": dag_run_id,
        "ct.data_hash": data["data_hash"],
        "ct.dataset_version": data.get("dataset_version", ""),
        "ct.reason": reason[:500],
        "ct.device": device,
        "ct.device_reason": why,
        "mlflow.source.git.commit": git_commit(settings),
        "ct.role": "challenger",
    }
    tracking = mlflow.MlflowClient()
    experiment_id = mlflow.set_experiment(settings.mlflow_experiment).experiment_id
    _close_abandoned_runs(tracking, experiment_id, dag_run_id)
    run_id = tracking.create_run(experiment_id, run_name=f"challenger {data['data_hash'][:8]}", tags=tags).info.run_id
    logged_params = {
        **{k: v for k, v in params.items() if k != "eval_metric"},
        "num_boost_round": rounds,
        "early_stopping_rounds": patience,
        "train_rows": len(train),
        "validation_rows": len(validation),
    }
    try:
        # What does not depend on the model is logged while it trains.
        with ThreadPoolExecutor(max_workers=1) as pool:
            inputs_logged = pool.submit(
                _log_training_inputs, tracking, run_id, logged_params, reference, client, settings, data
            )
            started = time.perf_counter()
            booster, history = fit_booster(train, validation, spec, params, rounds, patience)
            fit_seconds = time.perf_counter() - started
            inputs_logged.result()

        now = int(time.time() * 1000)
        best = int(getattr(booster, "best_iteration", rounds - 1))
        metrics = [
            Metric(f"{split}_{name}", float(value), now, step)
            for split, by_metric in history.items()
            for name, values in by_metric.items()
            for step, value in enumerate(values)
        ]
        metrics += [
            Metric("best_iteration", float(best), now, 0),
            Metric("fit_seconds", fit_seconds, now, 0),
            *(
                Metric(f"best_validation_{name}", float(values[best]), now, 0)
                for name, values in history["validation"].items()
            ),
        ]
        for start in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
            tracking.log_batch(run_id, metrics=metrics[start : start + 1000])

        # MLflow's signature and example describe what the booster consumes (the encoded matrix), so
        # the stock xgboost pyfunc flavor can score them; feature_spec.json maps raw rows to it.
        example = spec.encoded_frame(features.head(5))
        signature = infer_signature(example, spec.predict(booster, example.to_numpy()))
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
            spec_path = Path(tmp) / FEATURE_SPEC_FILE
            spec_path.write_text(json.dumps(spec.to_dict(), indent=2))
            model_info = mlflow.xgboost.log_model(
                booster,
                name=MODEL_NAME_IN_RUN,
                model_format="ubj",
                signature=signature,
                input_example=example,
                extra_files=[str(spec_path)],
                # Stated, not inferred: inference re-loads the model in a subprocess (seconds per run).
                pip_requirements=[f"xgboost=={xgb_version()}", f"mlflow=={mlflow.__version__}"],
            )
            # The last write: a FINISHED run with this tag is what a re-run of the DAG run reuses.
            mlflow.set_tag("ct.model_id", model_info.model_id)
    except BaseException:
        tracking.set_terminated(run_id, "FAILED")
        raise
    log.info("trained run %s on %s in %.1fs (best iteration %d)", run_id, device, fit_seconds, best)
    return _run_summary(run_id)


def _close_abandoned_runs(tracking: Any, experiment_id: str, dag_run_id: str) -> None:
    """A try that died mid-fit (SIGKILL, OOM, lost worker) leaves its run RUNNING: mark it KILLED.

    Only runs of this DAG run are touched, and only when a new try is about to train: Airflow runs
    one try of a task instance at a time, so an earlier try still RUNNING has died.
    """
    stale = tracking.search_runs(
        [experiment_id],
        filter_string=f"tags.`ct.dag_run_id` = '{_quote(dag_run_id)}' and attributes.status = 'RUNNING'",
    )
    for run in stale:
        log.warning("run %s of DAG run %s was left RUNNING by a dead try: marked KILLED", run.info.run_id, dag_run_id)
        tracking.set_terminated(run.info.run_id, "KILLED")


def _log_training_inputs(
    tracking: Any,
    run_id: str,
    params: dict[str, Any],
    reference: pd.DataFrame,
    client: S3Client,
    settings: Settings,
    data: TrainingData,
) -> None:
    """Params, the reference sample, the data manifest and library versions of a training run."""
    from mlflow.entities import Param

    tracking.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    with tempfile.TemporaryDirectory() as tmp:
        reference_path = Path(tmp) / "reference.parquet"
        reference.to_parquet(reference_path, index=False)
        tracking.log_artifact(run_id, str(reference_path), artifact_path="reference")
    tracking.log_dict(run_id, read_json_uri(client, settings, data["manifest_uri"]), MANIFEST_ARTIFACT)
    tracking.log_dict(run_id, library_versions(), "environment/versions.json")


def _run_summary(run_id: str) -> TrainedModel:
    import mlflow

    run = mlflow.MlflowClient().get_run(run_id)
    model_id = run.data.tags["ct.model_id"]
    return TrainedModel(
        run_id=run_id,
        run_url=f"{mlflow.get_tracking_uri()}/#/experiments/{run.info.experiment_id}/runs/{run_id}",
        model_id=model_id,
        model_uri=f"models:/{model_id}",
        device=run.data.tags.get("ct.device"),
        best_iteration=int(run.data.metrics.get("best_iteration", -1)),
        fit_seconds=run.data.metrics.get("fit_seconds"),
        data_hash=run.data.tags.get("ct.data_hash"),
    )
