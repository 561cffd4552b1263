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
| ``CT_ROC_AUC_FLOOR`` | ``0.70`` | absolute quality floor for a challenger |
| ``CT_MIN_DELTA`` | ``0.0`` | how much a challenger must beat the champion by |
| ``CT_GPU_QUEUE`` / ``CT_GPU_POOL`` | ``gpu`` / ``gpu`` | where training runs |
| ``CT_SEED`` | ``42`` | seed for every random choice |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
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
    roc_auc_floor: float = 0.70
    min_delta: float = 0.0
    gpu_queue: str = "gpu"
    gpu_pool: str = "gpu"
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
        roc_auc_floor=float(get("CT_ROC_AUC_FLOOR", str(defaults.roc_auc_floor))),
        min_delta=float(get("CT_MIN_DELTA", str(defaults.min_delta))),
        gpu_queue=get("CT_GPU_QUEUE", defaults.gpu_queue),
        gpu_pool=get("CT_GPU_POOL", defaults.gpu_pool),
        seed=int(get("CT_SEED", str(defaults.seed))),
    )
