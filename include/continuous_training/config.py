"""The one place settings come from.

Every setting is read from an environment variable with a documented default. Airflow Variables
reach this module the same way: Airflow exposes ``AIRFLOW_VAR_<NAME>`` variables, and
:func:`load_settings` accepts any mapping, so a deployment may pass ``Variable``-backed values too.

This module is imported by DAG files at parse time, so it uses the standard library only.

| env var | default | meaning |
| --- | --- | --- |
| ``CT_S3_BUCKET`` | ``ct-data`` | bucket holding every prefix below |
| ``CT_LANDING_PREFIX`` | ``landing/`` | where new raw files land (never modified or deleted) |
| ``CT_CURATED_PREFIX`` | ``curated/`` | validated batches as Parquet |
| ``CT_QUARANTINE_PREFIX`` | ``quarantine/`` | rejected objects / rows plus a JSON report |
| ``CT_MANIFEST_PREFIX`` | ``manifests/ingest/`` | one JSON entry per (landing key, ETag) seen |
| ``CT_INFERENCE_PREFIX`` | ``inference/`` | inference log written by the endpoint |
| ``CT_REPORTS_PREFIX`` | ``reports/`` | drift and validation reports |
| ``CT_AWS_CONN_ID`` | ``aws_ct`` | Airflow connection used for S3 |
| ``CT_S3_ENDPOINT_URL`` | empty (AWS) | S3-compatible endpoint for code running outside Airflow |
| ``MLFLOW_TRACKING_URI`` | ``http://127.0.0.1:5000`` | MLflow tracking server |
| ``CT_MLFLOW_EXPERIMENT`` | ``continuous-training`` | MLflow experiment name |
| ``CT_MODEL_NAME`` | ``ct-classifier`` | MLflow registered model name |
| ``CT_EXPECTATION_SUITE`` | bundled ``transactions.json`` | Great Expectations suite file |
| ``CT_LABEL_COLUMN`` | ``is_fraud`` | binary label (0/1) |
| ``CT_ID_COLUMN`` | ``transaction_id`` | unique row id |
| ``CT_TIMESTAMP_COLUMN`` | ``event_time`` | event time, used for time-based splits |
| ``CT_CATEGORICAL_COLUMNS`` | ``merchant_category,channel,country`` | categorical features |
| ``CT_NUMERIC_COLUMNS`` | ``amount,…`` (see below) | numeric features |
| ``CT_BAD_ROW_BUDGET`` | ``0.01`` | share of bad rows quarantined row by row; above it the batch goes |
| ``CT_MAX_BATCH_BYTES`` | ``536870912`` | larger landing objects are quarantined unread |
| ``CT_SENSOR_POKE_SECONDS`` | ``60`` | how often the new-data trigger lists the landing prefix |
| ``CT_SENSOR_TIMEOUT_SECONDS`` | ``3300`` | how long one ingest run waits for new data |
| ``CT_TRAINING_WINDOW_DAYS`` | ``30`` | curated batches with events in the last N days train the model |
| ``CT_HOLDOUT_FRACTION`` / ``CT_VALIDATION_FRACTION`` | ``0.2`` / ``0.15`` | newest: holdout, then validation |
| ``CT_NUM_BOOST_ROUND`` / ``CT_EARLY_STOPPING_ROUNDS`` | ``400`` / ``30`` | XGBoost rounds and patience on validation |
| ``CT_MAX_DEPTH`` / ``CT_LEARNING_RATE`` | ``6`` / ``0.1`` | XGBoost tree depth and eta |
| ``CT_REFERENCE_SAMPLE_ROWS`` | ``5000`` | training rows kept with the model for drift checks |
| ``CT_ROC_AUC_FLOOR`` | ``0.70`` | absolute quality floor for a challenger |
| ``CT_MIN_DELTA`` | ``0.0`` | how much a challenger must beat the champion's ROC AUC by |
| ``CT_LOSS_TOLERANCE`` | ``0.005`` | bootstrap 95 % lower bound of the AUC gain may not be below -this |
| ``CT_BOOTSTRAP_SAMPLES`` | ``1000`` | paired bootstrap resamples of the holdout |
| ``CT_SLICE_COLUMN`` | ``channel`` | categorical column whose slices are compared |
| ``CT_SLICE_TOLERANCE`` / ``CT_MIN_SLICE_ROWS`` | ``0.02`` / ``200`` | max slice AUC loss; tiny slices ungated |
| ``CT_DECISION_THRESHOLD`` | ``0.5`` | score threshold for accuracy / F1 |
| ``CT_DEPLOYMENT_TARGET`` | ``local`` | ``local``: the serving endpoint; ``none``: promote without deploying |
| ``CT_SERVING_URL`` | ``http://127.0.0.1:8000`` | where deploy / smoke-test tasks reach the endpoint |
| ``CT_SERVING_ADMIN_TOKEN`` | empty (admin routes refuse all) | bearer token for ``/admin/*``; a secret |
| ``CT_SERVING_WORKERS`` | ``2`` | uvicorn worker processes |
| ``CT_SERVING_STATE_DIR`` | ``.services/serving`` | desired version and worker heartbeats shared by the workers |
| ``CT_SERVING_MAX_BATCH`` / ``CT_SERVING_MAX_BODY_BYTES`` | ``1000`` / ``1048576`` | request limits |
| ``CT_INFERENCE_FLUSH_ROWS`` / ``CT_INFERENCE_FLUSH_SECONDS`` | ``1000`` / ``5`` | inference log flush triggers |
| ``CT_INFERENCE_BUFFER_ROWS`` | ``100000`` | rows kept while S3 is down; beyond: dropped and counted |
| ``CT_SMOKE_REQUESTS`` / ``CT_SMOKE_P99_MS`` | ``200`` / ``250`` | smoke test size and latency budget |
| ``CT_ALERT_WEBHOOK_URL`` | empty | optional Slack-compatible webhook for alerts (always logged) |
| ``CT_DRIFT_MIN_ROWS`` | ``200`` | fewer logged rows in a window: "not enough data", no decision |
| ``CT_DRIFT_SAMPLE_ROWS`` | ``20000`` | seeded sample cap per side for Evidently (bounded time) |
| ``CT_DRIFT_SHARE`` | ``0.3`` | a window drifted when this share of features drifted |
| ``CT_DRIFT_USE_IMPORTANCE`` | ``false`` | weight the share by the champion's feature importance |
| ``CT_DRIFT_WINDOWS_REQUIRED`` / ``CT_DRIFT_WINDOWS_CONSIDERED`` | ``1`` / ``1`` | retrain on N drifted of the last M |
| ``CT_DRIFT_COOLDOWN_HOURS`` | ``24`` | no drift-triggered retrain within this long of the last |
| ``CT_GPU_QUEUE`` / ``CT_GPU_POOL`` | ``gpu`` / ``gpu`` | where training runs |
| ``CT_TRAINING_TIMEOUT_MINUTES`` | ``120`` | ``execution_timeout`` of the training task |
| ``CT_SEED`` | ``42`` | seed for every random choice |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_SUITE_PATH = PACKAGE_DIR / "expectations" / "transactions.json"

DEFAULT_NUMERIC_COLUMNS = (
    "amount",
    "card_age_days",
    "hour_of_day",
    "distance_from_home_km",
    "transactions_last_24h",
    "merchant_risk_score",
)
DEFAULT_CATEGORICAL_COLUMNS = ("merchant_category", "channel", "country")
# "local": this package's endpoint; "sagemaker": a SageMaker endpoint; "none": promote without deploying.
DEPLOYMENT_TARGETS = ("local", "sagemaker", "none")


def _prefix(value: str) -> str:
    """Normalise an S3 prefix to ``a/b/`` (no leading slash, one trailing slash)."""
    value = value.strip().strip("/")
    if not value or ".." in value.split("/"):
        raise ValueError(f"invalid S3 prefix {value!r}: must be non-empty and contain no '..'")
    return value + "/"


def _columns(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Frozen settings for every stage; build it with :func:`load_settings`."""

    s3_bucket: str = "ct-data"
    landing_prefix: str = "landing/"
    curated_prefix: str = "curated/"
    quarantine_prefix: str = "quarantine/"
    manifest_prefix: str = "manifests/ingest/"
    inference_prefix: str = "inference/"
    reports_prefix: str = "reports/"
    aws_conn_id: str = "aws_ct"
    s3_endpoint_url: str | None = None
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    mlflow_experiment: str = "continuous-training"
    model_name: str = "ct-classifier"
    expectation_suite_path: Path = DEFAULT_SUITE_PATH
    label_column: str = "is_fraud"
    id_column: str = "transaction_id"
    timestamp_column: str = "event_time"
    categorical_columns: tuple[str, ...] = DEFAULT_CATEGORICAL_COLUMNS
    numeric_columns: tuple[str, ...] = DEFAULT_NUMERIC_COLUMNS
    bad_row_budget: float = 0.01
    max_batch_bytes: int = 512 * 1024 * 1024
    sensor_poke_seconds: float = 60.0
    sensor_timeout_seconds: float = 3300.0
    training_window_days: int = 30
    holdout_fraction: float = 0.2
    validation_fraction: float = 0.15
    num_boost_round: int = 400
    early_stopping_rounds: int = 30
    max_depth: int = 6
    learning_rate: float = 0.1
    reference_sample_rows: int = 5000
    roc_auc_floor: float = 0.70
    min_delta: float = 0.0
    loss_tolerance: float = 0.005
    bootstrap_samples: int = 1000
    slice_column: str = "channel"
    slice_tolerance: float = 0.02
    min_slice_rows: int = 200
    decision_threshold: float = 0.5
    deployment_target: str = "local"
    serving_url: str = "http://127.0.0.1:8000"
    serving_admin_token: str | None = field(default=None, repr=False)
    serving_workers: int = 2
    serving_state_dir: Path = Path(".services/serving")
    serving_max_batch: int = 1000
    serving_max_body_bytes: int = 1024 * 1024
    inference_flush_rows: int = 1000
    inference_flush_seconds: float = 5.0
    inference_buffer_rows: int = 100_000
    smoke_requests: int = 200
    smoke_p99_ms: float = 250.0
    alert_webhook_url: str | None = None
    drift_min_rows: int = 200
    drift_sample_rows: int = 20000
    drift_share_threshold: float = 0.3
    drift_use_importance: bool = False
    drift_windows_required: int = 1
    drift_windows_considered: int = 1
    drift_cooldown_hours: float = 24.0
    gpu_queue: str = "gpu"
    gpu_pool: str = "gpu"
    training_timeout_minutes: int = 120
    seed: int = 42

    def __post_init__(self) -> None:
        if len(self.s3_bucket) < 3:
            raise ValueError(f"CT_S3_BUCKET {self.s3_bucket!r}: bucket names need at least 3 characters")
        if not 0.0 <= self.bad_row_budget < 1.0:
            raise ValueError(f"CT_BAD_ROW_BUDGET must be in [0, 1), got {self.bad_row_budget}")
        overlap = set(self.categorical_columns) & set(self.numeric_columns)
        if overlap:
            raise ValueError(f"columns listed as both categorical and numeric: {sorted(overlap)}")
        reserved = {self.label_column, self.id_column, self.timestamp_column}
        if reserved & set(self.feature_columns):
            raise ValueError(f"label/id/timestamp columns cannot be features: {sorted(reserved)}")
        fractions = (self.holdout_fraction, self.validation_fraction)
        if not all(0 < f < 1 for f in fractions) or sum(fractions) >= 0.9:
            raise ValueError(
                "CT_HOLDOUT_FRACTION and CT_VALIDATION_FRACTION must be in (0, 1) and leave rows to train on"
            )
        if self.deployment_target not in DEPLOYMENT_TARGETS:
            raise ValueError(f"CT_DEPLOYMENT_TARGET {self.deployment_target!r}: expected one of {DEPLOYMENT_TARGETS}")
        if not 1 <= self.drift_windows_required <= self.drift_windows_considered:
            raise ValueError("need 1 <= CT_DRIFT_WINDOWS_REQUIRED <= CT_DRIFT_WINDOWS_CONSIDERED")
        if self.slice_column and self.slice_column not in self.categorical_columns:
            raise ValueError(f"CT_SLICE_COLUMN {self.slice_column!r} must be one of the categorical columns")

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Model inputs in a fixed order: numeric first, then categorical."""
        return self.numeric_columns + self.categorical_columns

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.s3_bucket}/{key}"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read :class:`Settings` from ``environ`` (default: ``os.environ``), falling back to defaults."""
    env = os.environ if environ is None else environ
    defaults = Settings()

    def get(name: str, default: str) -> str:
        value = env.get(name)
        return default if value is None or value == "" else value

    return Settings(
        s3_bucket=get("CT_S3_BUCKET", defaults.s3_bucket),
        landing_prefix=_prefix(get("CT_LANDING_PREFIX", defaults.landing_prefix)),
        curated_prefix=_prefix(get("CT_CURATED_PREFIX", defaults.curated_prefix)),
        quarantine_prefix=_prefix(get("CT_QUARANTINE_PREFIX", defaults.quarantine_prefix)),
        manifest_prefix=_prefix(get("CT_MANIFEST_PREFIX", defaults.manifest_prefix)),
        inference_prefix=_prefix(get("CT_INFERENCE_PREFIX", defaults.inference_prefix)),
        reports_prefix=_prefix(get("CT_REPORTS_PREFIX", defaults.reports_prefix)),
        aws_conn_id=get("CT_AWS_CONN_ID", defaults.aws_conn_id),
        s3_endpoint_url=env.get("CT_S3_ENDPOINT_URL") or None,
        mlflow_tracking_uri=get("MLFLOW_TRACKING_URI", defaults.mlflow_tracking_uri),
        mlflow_experiment=get("CT_MLFLOW_EXPERIMENT", defaults.mlflow_experiment),
        model_name=get("CT_MODEL_NAME", defaults.model_name),
        expectation_suite_path=Path(get("CT_EXPECTATION_SUITE", str(defaults.expectation_suite_path))),
        label_column=get("CT_LABEL_COLUMN", defaults.label_column),
        id_column=get("CT_ID_COLUMN", defaults.id_column),
        timestamp_column=get("CT_TIMESTAMP_COLUMN", defaults.timestamp_column),
        categorical_columns=_columns(get("CT_CATEGORICAL_COLUMNS", ",".join(defaults.categorical_columns))),
        numeric_columns=_columns(get("CT_NUMERIC_COLUMNS", ",".join(defaults.numeric_columns))),
        bad_row_budget=float(get("CT_BAD_ROW_BUDGET", str(defaults.bad_row_budget))),
        max_batch_bytes=int(get("CT_MAX_BATCH_BYTES", str(defaults.max_batch_bytes))),
        sensor_poke_seconds=float(get("CT_SENSOR_POKE_SECONDS", str(defaults.sensor_poke_seconds))),
        sensor_timeout_seconds=float(get("CT_SENSOR_TIMEOUT_SECONDS", str(defaults.sensor_timeout_seconds))),
        training_window_days=int(get("CT_TRAINING_WINDOW_DAYS", str(defaults.training_window_days))),
        holdout_fraction=float(get("CT_HOLDOUT_FRACTION", str(defaults.holdout_fraction))),
        validation_fraction=float(get("CT_VALIDATION_FRACTION", str(defaults.validation_fraction))),
        num_boost_round=int(get("CT_NUM_BOOST_ROUND", str(defaults.num_boost_round))),
        early_stopping_rounds=int(get("CT_EARLY_STOPPING_ROUNDS", str(defaults.early_stopping_rounds))),
        max_depth=int(get("CT_MAX_DEPTH", str(defaults.max_depth))),
        learning_rate=float(get("CT_LEARNING_RATE", str(defaults.learning_rate))),
        reference_sample_rows=int(get("CT_REFERENCE_SAMPLE_ROWS", str(defaults.reference_sample_rows))),
        roc_auc_floor=float(get("CT_ROC_AUC_FLOOR", str(defaults.roc_auc_floor))),
        min_delta=float(get("CT_MIN_DELTA", str(defaults.min_delta))),
        loss_tolerance=float(get("CT_LOSS_TOLERANCE", str(defaults.loss_tolerance))),
        bootstrap_samples=int(get("CT_BOOTSTRAP_SAMPLES", str(defaults.bootstrap_samples))),
        slice_column=get("CT_SLICE_COLUMN", defaults.slice_column),
        slice_tolerance=float(get("CT_SLICE_TOLERANCE", str(defaults.slice_tolerance))),
        min_slice_rows=int(get("CT_MIN_SLICE_ROWS", str(defaults.min_slice_rows))),
        decision_threshold=float(get("CT_DECISION_THRESHOLD", str(defaults.decision_threshold))),
        deployment_target=get("CT_DEPLOYMENT_TARGET", defaults.deployment_target),
        serving_url=get("CT_SERVING_URL", defaults.serving_url).rstrip("/"),
        serving_admin_token=env.get("CT_SERVING_ADMIN_TOKEN") or None,
        serving_workers=int(get("CT_SERVING_WORKERS", str(defaults.serving_workers))),
        serving_state_dir=Path(get("CT_SERVING_STATE_DIR", str(defaults.serving_state_dir))),
        serving_max_batch=int(get("CT_SERVING_MAX_BATCH", str(defaults.serving_max_batch))),
        serving_max_body_bytes=int(get("CT_SERVING_MAX_BODY_BYTES", str(defaults.serving_max_body_bytes))),
        inference_flush_rows=int(get("CT_INFERENCE_FLUSH_ROWS", str(defaults.inference_flush_rows))),
        inference_flush_seconds=float(get("CT_INFERENCE_FLUSH_SECONDS", str(defaults.inference_flush_seconds))),
        inference_buffer_rows=int(get("CT_INFERENCE_BUFFER_ROWS", str(defaults.inference_buffer_rows))),
        smoke_requests=int(get("CT_SMOKE_REQUESTS", str(defaults.smoke_requests))),
        smoke_p99_ms=float(get("CT_SMOKE_P99_MS", str(defaults.smoke_p99_ms))),
        alert_webhook_url=env.get("CT_ALERT_WEBHOOK_URL") or None,
        drift_min_rows=int(get("CT_DRIFT_MIN_ROWS", str(defaults.drift_min_rows))),
        drift_sample_rows=int(get("CT_DRIFT_SAMPLE_ROWS", str(defaults.drift_sample_rows))),
        drift_share_threshold=float(get("CT_DRIFT_SHARE", str(defaults.drift_share_threshold))),
        drift_use_importance=get("CT_DRIFT_USE_IMPORTANCE", "false").lower() in {"1", "true", "yes"},
        drift_windows_required=int(get("CT_DRIFT_WINDOWS_REQUIRED", str(defaults.drift_windows_required))),
        drift_windows_considered=int(get("CT_DRIFT_WINDOWS_CONSIDERED", str(defaults.drift_windows_considered))),
        drift_cooldown_hours=float(get("CT_DRIFT_COOLDOWN_HOURS", str(defaults.drift_cooldown_hours))),
        gpu_queue=get("CT_GPU_QUEUE", defaults.gpu_queue),
        gpu_pool=get("CT_GPU_POOL", defaults.gpu_pool),
        training_timeout_minutes=int(get("CT_TRAINING_TIMEOUT_MINUTES", str(defaults.training_timeout_minutes))),
        seed=int(get("CT_SEED", str(defaults.seed))),
    )
