"""The one place settings come from.

Each setting is declared once, as a field of :class:`Settings` (name, type, default, meaning and the
environment variable that sets it). The loader, the error messages and the settings table in the
README are derived from that declaration; ``python -m include.continuous_training.config --markdown``
prints the table.

Where a value comes from, the first that is set and non-empty wins:

1. the environment variable (``CT_MAX_DEPTH``, ``MLFLOW_TRACKING_URI``, ...);
2. for code that calls :func:`runtime_settings` inside a task, an Airflow Variable of the same name,
   resolved the way Airflow resolves Variables (secrets backend, ``AIRFLOW_VAR_<NAME>``, metadata DB);
3. the declared default.

:func:`load_settings` reads the environment only: DAG files call it at module level, and parsing a
DAG must never reach the metadata DB or the API server. So what shapes a DAG at parse time (queue,
pool, timeouts, sensor intervals) follows the environment of the process that parses it; a Variable
reaches only code that calls :func:`runtime_settings` while a task runs.

A value that does not parse, or settings that contradict each other, raise :class:`SettingsError`
naming the variable and what was expected (``CT_MAX_DEPTH='six': expected an integer``): a
misconfiguration that no retry can fix.

This module is imported by DAG files at parse time, so it uses the standard library only.
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.continuous_training.errors import ConfigurationError, task_outcome

if TYPE_CHECKING:
    from include.continuous_training.model_files import ModelFile

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_SUITE_PATH = PACKAGE_DIR / "expectations" / "transactions.json"
# Model files (model_files.py) sit beside the package: <project root>/models, /opt/airflow/models in the image.
DEFAULT_MODELS_DIR = PACKAGE_DIR.parent.parent / "models"

DEFAULT_NUMERIC_COLUMNS = (
    "amount",
    "card_age_days",
    "hour_of_day",
    "distance_from_home_km",
    "transactions_last_24h",
    "merchant_risk_score",
)
DEFAULT_CATEGORICAL_COLUMNS = ("merchant_category", "channel", "country")
# "local": this package's endpoint; "none": promote without deploying.
DEPLOYMENT_TARGETS = ("local", "none")
# What happens to a batch that trips a distribution guard (validation.py).
DISTRIBUTION_GUARD_ACTIONS = ("flag", "quarantine")
# What a training window that lost most of its rows does: stop the run, or say so loudly and train.
WINDOW_SHRINK_ACTIONS = ("fail", "warn")
# How a model that passed the smoke test reaches traffic (rollout.py): the stages in order.
ROLLOUT_STRATEGIES = ("direct", "shadow", "canary", "shadow,canary")
# A rollout stage that did not see CT_ROLLOUT_MIN_REQUESTS by CT_ROLLOUT_MAX_MINUTES: undo it, or go on (loudly).
INSUFFICIENT_TRAFFIC_ACTIONS = ("rollback", "proceed")
# Who lets a model that passed every gate become the champion: the gates alone, or a person too (Airflow HITL).
APPROVAL_MODES = ("none", "required")
# What a model predicts: the objective, the metrics and the gates follow from it.
TASKS = ("binary", "multiclass", "regression")
# The holdout metrics each task reports; the first is the task's default gate metric (CT_GATE_METRIC).
TASK_METRICS = {
    "binary": ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "f1"),
    "multiclass": ("macro_f1", "accuracy", "log_loss", "roc_auc"),
    "regression": ("rmse", "mae", "r2"),
}
# Metrics where a smaller value is the better model (every other metric: higher is better).
LOWER_IS_BETTER_METRICS = frozenset({"log_loss", "brier", "rmse", "mae"})
# Columns ingest adds to curated batches when a table has no id / no event-time column of its own.
DERIVED_ID_COLUMN = "ct_row_id"
DERIVED_EVENT_TIME_COLUMN = "ct_ingested_at"

VariableLookup = Callable[[str], str | None]
"""Returns the value of the Airflow Variable with that name, or None when there is none."""


class SettingsError(ConfigurationError):
    """A setting is malformed or contradicts another: fix the configuration, retrying cannot help."""


# --- parsers: raw text -> value; a ValueError says what was expected (the loader adds the name) ---


def _prefix(value: str) -> str:
    """Normalise an S3 prefix to ``a/b/`` (no leading slash, one trailing slash)."""
    value = value.strip().strip("/")
    if not value or ".." in value.split("/"):
        raise ValueError("invalid S3 prefix: must be non-empty and contain no '..'")
    return value + "/"


def _columns(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _integer(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError("expected an integer") from None


def _number(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _numbers(value: str) -> tuple[float, ...]:
    try:
        return tuple(_number(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError("expected comma-separated numbers, e.g. 5,25,50") from None


_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})


def _boolean(value: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("expected a boolean (1/0, true/false, yes/no)")


def _url(value: str) -> str:
    return value.strip().rstrip("/")


def _text(value: str) -> str:
    return value


@dataclass(frozen=True)
class _Kind:
    label: str  # the settings table's "type" column
    parse: Callable[[str], Any]


_KINDS: dict[Any, _Kind] = {
    str: _Kind("text", _text),
    str | None: _Kind("text", _text),
    int: _Kind("integer", _integer),
    float: _Kind("number", _number),
    bool: _Kind("boolean", _boolean),
    Path: _Kind("path", Path),
    tuple[str, ...]: _Kind("column names, comma-separated", _columns),
}
_PREFIX = _Kind("S3 prefix", _prefix)
_URL = _Kind("URL", _url)


def _setting(
    default: Any, env: str, doc: str, *, kind: _Kind | None = None, shown: str | None = None, secret: bool = False
) -> Any:
    """Declare one setting: its default, the variable that sets it, and what it means (Markdown).

    ``kind`` overrides the parser the field's type implies; ``shown`` is how the docs show a default
    that is not portable text (a path inside the installed package); a ``secret`` never appears in
    ``repr`` or in an error message.
    """
    return field(
        default=default,
        repr=not secret,
        metadata={"env": env, "doc": doc, "kind": kind, "shown": shown, "secret": secret},
    )


@dataclass(frozen=True)
class Settings:
    """Frozen settings for every stage; build it with :func:`load_settings` or :func:`runtime_settings`."""

    model: str = _setting(
        "",
        "CT_MODEL",
        "the model file (`CT_MODELS_DIR/<name>.yaml`) a process outside a DAG uses (the endpoint, the CLIs); "
        "empty: the settings below alone. DAGs pass their own model",
    )
    models_dir: Path = _setting(
        DEFAULT_MODELS_DIR,
        "CT_MODELS_DIR",
        "where model files are found; one set of DAGs per file",
        shown="`models/` at the project root",
    )
    s3_bucket: str = _setting("ct-data", "CT_S3_BUCKET", "bucket holding every prefix below")
    landing_prefix: str = _setting(
        "landing/", "CT_LANDING_PREFIX", "where new raw files land (never modified or deleted)", kind=_PREFIX
    )
    curated_prefix: str = _setting("curated/", "CT_CURATED_PREFIX", "validated batches as Parquet", kind=_PREFIX)
    quarantine_prefix: str = _setting(
        "quarantine/", "CT_QUARANTINE_PREFIX", "rejected objects / rows plus a JSON report", kind=_PREFIX
    )
    manifest_prefix: str = _setting(
        "manifests/ingest/", "CT_MANIFEST_PREFIX", "one JSON entry per (landing key, ETag) seen", kind=_PREFIX
    )
    training_prefix: str = _setting(
        "training/",
        "CT_TRAINING_PREFIX",
        "train / validation / holdout splits and their manifest, one folder per data hash",
        kind=_PREFIX,
    )
    inference_prefix: str = _setting(
        "inference/", "CT_INFERENCE_PREFIX", "inference log written by the endpoint", kind=_PREFIX
    )
    feedback_prefix: str = _setting(
        "feedback/",
        "CT_FEEDBACK_PREFIX",
        "late labels (Parquet or CSV with `prediction_id` and the label column) for realized performance",
        kind=_PREFIX,
    )
    reports_prefix: str = _setting("reports/", "CT_REPORTS_PREFIX", "drift and validation reports", kind=_PREFIX)
    serving_state_prefix: str = _setting(
        "serving/",
        "CT_SERVING_STATE_PREFIX",
        "the desired deployment every endpoint replica follows: `<prefix><registered model>/deployment.json`",
        kind=_PREFIX,
    )
    dataset_prefix: str = _setting(
        "datasets/",
        "CT_DATASET_PREFIX",
        "dataset versions (`<dataset>@v12` per training window, `<dataset>/batch@v7` per curated batch)",
        kind=_PREFIX,
    )
    dataset_name: str = _setting(
        "",
        "CT_DATASET_NAME",
        "the name in dataset versions; empty: the suite's file name without `.json` / `.suite.json`",
    )
    audit_prefix: str = _setting(
        "audit/",
        "CT_AUDIT_PREFIX",
        "append-only audit trail of alias moves: one object per event under `<prefix><registered model>/`",
        kind=_PREFIX,
    )
    aws_conn_id: str = _setting("aws_ct", "CT_AWS_CONN_ID", "Airflow connection used for S3")
    s3_endpoint_url: str | None = _setting(
        None, "CT_S3_ENDPOINT_URL", "S3-compatible endpoint for code running outside Airflow; empty: AWS"
    )
    mlflow_tracking_uri: str = _setting("http://127.0.0.1:5000", "MLFLOW_TRACKING_URI", "MLflow tracking server")
    mlflow_experiment: str = _setting("continuous-training", "CT_MLFLOW_EXPERIMENT", "MLflow experiment name")
    model_name: str = _setting("ct-classifier", "CT_MODEL_NAME", "MLflow registered model name")
    expectation_suite_path: Path = _setting(
        DEFAULT_SUITE_PATH,
        "CT_EXPECTATION_SUITE",
        "Great Expectations suite file",
        shown="bundled `expectations/transactions.json`",
    )
    task: str = _setting("binary", "CT_TASK", "what the model predicts: `binary`, `multiclass` or `regression`")
    label_column: str = _setting(
        "is_fraud", "CT_LABEL_COLUMN", "the label: two classes (binary), several (multiclass) or a number (regression)"
    )
    positive_class: str = _setting(
        "",
        "CT_POSITIVE_CLASS",
        "binary: the label value that is the positive class (as text, e.g. `yes`, `1`, `True`); "
        "empty: the larger of the two sorted values",
    )
    max_classes: int = _setting(
        50, "CT_MAX_CLASSES", "multiclass: a label with more distinct values is refused before training"
    )
    id_column: str = _setting(
        "transaction_id",
        "CT_ID_COLUMN",
        f"unique row id; empty (model files: `id: null`): ingest derives a stable `{DERIVED_ID_COLUMN}`",
    )
    timestamp_column: str = _setting(
        "event_time",
        "CT_TIMESTAMP_COLUMN",
        "event time, used for time-based splits; empty (model files: `event_time: null`): "
        f"ingest records the ingest time as `{DERIVED_EVENT_TIME_COLUMN}`",
    )
    categorical_columns: tuple[str, ...] = _setting(
        DEFAULT_CATEGORICAL_COLUMNS, "CT_CATEGORICAL_COLUMNS", "categorical features"
    )
    numeric_columns: tuple[str, ...] = _setting(DEFAULT_NUMERIC_COLUMNS, "CT_NUMERIC_COLUMNS", "numeric features")
    bad_row_budget: float = _setting(
        0.01,
        "CT_BAD_ROW_BUDGET",
        "share of bad rows quarantined row by row; above it the whole batch goes, in [0, 1)",
    )
    max_batch_bytes: int = _setting(
        512 * 1024 * 1024, "CT_MAX_BATCH_BYTES", "larger landing objects are quarantined unread"
    )
    distribution_guard_action: str = _setting(
        "flag",
        "CT_DISTRIBUTION_GUARD_ACTION",
        "a batch that trips a distribution guard (collapsed spread, one category, null-rate jump) is "
        "`flag`: curated, flagged and alerted; `quarantine`: quarantined",
    )
    distribution_guard_min_rows: int = _setting(
        100,
        "CT_DISTRIBUTION_GUARD_MIN_ROWS",
        "batches with fewer rows are not checked by the distribution guards (too few rows to tell); at least 2",
    )
    # Event times against the clock (issue 14): a batch cannot move the training window by lying about time.
    max_future_skew_minutes: float = _setting(
        60.0,
        "CT_MAX_FUTURE_SKEW_MINUTES",
        "rows whose event time is later than the ingest time plus this are bad rows (under `CT_BAD_ROW_BUDGET`); "
        "rows older than `CT_TRAINING_WINDOW_DAYS` before the ingest time are only counted",
    )
    window_shrink_tolerance: float = _setting(
        0.5,
        "CT_WINDOW_SHRINK_TOLERANCE",
        "a training window holding less than this share of the previous training's rows (same window length) "
        "trips `CT_WINDOW_SHRINK_ACTION`; 0 turns the check off, in [0, 1]",
    )
    window_shrink_action: str = _setting(
        "fail",
        "CT_WINDOW_SHRINK_ACTION",
        "`fail`: such an assembly fails without retries and writes nothing; `warn`: a warning, and it trains",
    )
    sensor_poke_seconds: float = _setting(
        60.0, "CT_SENSOR_POKE_SECONDS", "how often the new-data trigger lists the landing prefix"
    )
    sensor_timeout_seconds: float = _setting(
        3300.0, "CT_SENSOR_TIMEOUT_SECONDS", "how long one ingest run waits for new data"
    )
    training_window_days: int = _setting(
        30,
        "CT_TRAINING_WINDOW_DAYS",
        "the training window: N days ending at the newest event at or before the run's time",
    )
    holdout_fraction: float = _setting(0.2, "CT_HOLDOUT_FRACTION", "newest rows held out for the gates")
    validation_fraction: float = _setting(
        0.15, "CT_VALIDATION_FRACTION", "next-newest rows for early stopping (both fractions must leave rows to train)"
    )
    num_boost_round: int = _setting(400, "CT_NUM_BOOST_ROUND", "XGBoost boosting rounds")
    early_stopping_rounds: int = _setting(30, "CT_EARLY_STOPPING_ROUNDS", "XGBoost patience on validation")
    max_depth: int = _setting(6, "CT_MAX_DEPTH", "XGBoost tree depth")
    learning_rate: float = _setting(0.1, "CT_LEARNING_RATE", "XGBoost eta")
    reference_sample_rows: int = _setting(
        5000, "CT_REFERENCE_SAMPLE_ROWS", "training rows kept with the model for drift checks"
    )
    gate_metric: str = _setting(
        "",
        "CT_GATE_METRIC",
        "holdout metric the gates compare (one the task reports); empty: `roc_auc` (binary), `macro_f1` "
        "(multiclass), `rmse` (regression)",
    )
    metric_floor: float | None = _setting(
        None,
        "CT_METRIC_FLOOR",
        "absolute floor on the gate metric (a ceiling for lower-is-better metrics); empty: `CT_ROC_AUC_FLOOR` "
        "when the gate metric is `roc_auc`, otherwise no floor",
        kind=_Kind("number", _number),
    )
    roc_auc_floor: float = _setting(0.70, "CT_ROC_AUC_FLOOR", "absolute quality floor for a challenger")
    min_delta: float = _setting(
        0.0, "CT_MIN_DELTA", "how much a challenger must beat the champion's gate metric (ROC AUC by default) by"
    )
    loss_tolerance: float = _setting(
        0.005, "CT_LOSS_TOLERANCE", "bootstrap 95 % lower bound of the gate-metric gain may not be below -this"
    )
    bootstrap_samples: int = _setting(1000, "CT_BOOTSTRAP_SAMPLES", "paired bootstrap resamples of the holdout")
    slice_column: str = _setting(
        "channel", "CT_SLICE_COLUMN", "categorical column whose slices are compared (one of the categorical columns)"
    )
    slice_tolerance: float = _setting(0.02, "CT_SLICE_TOLERANCE", "max slice loss on the gate metric")
    min_slice_rows: int = _setting(200, "CT_MIN_SLICE_ROWS", "slices with fewer holdout rows are not gated")
    decision_threshold: float = _setting(0.5, "CT_DECISION_THRESHOLD", "score threshold for accuracy / F1")
    deployment_target: str = _setting(
        "local",
        "CT_DEPLOYMENT_TARGET",
        "`local`: the serving endpoint; `none`: promote without deploying",
    )
    serving_url: str = _setting(
        "http://127.0.0.1:8000", "CT_SERVING_URL", "where deploy / smoke-test tasks reach the endpoint", kind=_URL
    )
    serving_admin_token: str | None = _setting(
        None,
        "CT_SERVING_ADMIN_TOKEN",
        "bearer token for the endpoint's `/admin/*` routes; empty: admin routes refuse all",
        secret=True,
    )
    serving_workers: int = _setting(2, "CT_SERVING_WORKERS", "uvicorn worker processes")
    serving_state_dir: Path = _setting(
        Path(".services/serving"),
        "CT_SERVING_STATE_DIR",
        "worker heartbeats and metrics shared by the workers of one endpoint replica (one folder per replica)",
    )
    serving_poll_seconds: float = _setting(
        1.0,
        "CT_SERVING_POLL_SECONDS",
        "how often each endpoint worker checks the desired deployment in S3 (a conditional GET: 304 when unchanged)",
    )
    shadow_percent: float = _setting(
        100.0,
        "CT_SHADOW_PERCENT",
        "share of requests (0-100) the variant that did not answer also scores, off the response path "
        "(shadow: the candidate), when a rollout does not set its own",
    )
    shadow_queue_size: int = _setting(
        1000,
        "CT_SHADOW_QUEUE_SIZE",
        "requests waiting for off-path scoring per worker; beyond it a shadow sample is dropped and counted",
    )
    serving_max_batch: int = _setting(1000, "CT_SERVING_MAX_BATCH", "most rows in one request")
    serving_max_body_bytes: int = _setting(1024 * 1024, "CT_SERVING_MAX_BODY_BYTES", "largest request body")
    inference_flush_rows: int = _setting(
        10_000,
        "CT_INFERENCE_FLUSH_ROWS",
        "inference log flushes after this many rows (one S3 object per flush and worker: each PUT costs "
        "the worker CPU time and a request charge)",
    )
    inference_flush_seconds: float = _setting(
        5.0, "CT_INFERENCE_FLUSH_SECONDS", "inference log flushes at least this often (seconds)"
    )
    inference_buffer_rows: int = _setting(
        100_000, "CT_INFERENCE_BUFFER_ROWS", "rows kept while S3 is down; beyond: dropped and counted"
    )
    explain_public: bool = _setting(
        False,
        "CT_EXPLAIN_PUBLIC",
        "`POST /explain` (per-feature contributions of one record) without the admin token; off: authenticated",
    )
    smoke_requests: int = _setting(200, "CT_SMOKE_REQUESTS", "smoke test size")
    smoke_p99_ms: float = _setting(250.0, "CT_SMOKE_P99_MS", "smoke test latency budget (p99)")
    rollout: str = _setting(
        "direct",
        "CT_ROLLOUT",
        "after the smoke test: `direct` (all traffic at once), `shadow` (the candidate scores a sample off the "
        "response path), `canary` (a growing share answered by the candidate, `CT_CANARY_STEPS`), or "
        "`shadow,canary`; each stage waits for traffic, then an analysis on the same live traffic passes or "
        "rolls back",
    )
    canary_steps: tuple[float, ...] = _setting(
        (5.0, 25.0, 50.0),
        "CT_CANARY_STEPS",
        "canary shares of requests in percent, in order (comma-separated); promotion takes the rest",
        kind=_Kind("numbers, comma-separated", _numbers),
        shown="5,25,50",
    )
    rollout_min_requests: int = _setting(
        500, "CT_ROLLOUT_MIN_REQUESTS", "candidate-scored requests a rollout stage waits for before its analysis"
    )
    rollout_max_minutes: float = _setting(
        60.0, "CT_ROLLOUT_MAX_MINUTES", "longest a rollout stage waits for `CT_ROLLOUT_MIN_REQUESTS`"
    )
    rollout_insufficient_traffic: str = _setting(
        "rollback",
        "CT_ROLLOUT_INSUFFICIENT_TRAFFIC",
        "a stage that saw too few requests by its deadline: `rollback`, or `proceed` (recorded as such, never silent)",
    )
    rollout_max_error_rate_increase: float = _setting(
        0.01, "CT_ROLLOUT_MAX_ERROR_RATE_INCREASE", "candidate error rate may exceed the champion's by at most this"
    )
    rollout_max_p99_ratio: float = _setting(
        1.5, "CT_ROLLOUT_MAX_P99_RATIO", "candidate p99 scoring latency may be at most this times the champion's ..."
    )
    rollout_p99_slack_ms: float = _setting(
        5.0, "CT_ROLLOUT_P99_SLACK_MS", "... or the champion's plus this many ms, whichever is larger"
    )
    rollout_max_psi: float = _setting(
        0.25, "CT_ROLLOUT_MAX_PSI", "population stability index of the candidate's scores against the champion's"
    )
    rollout_min_agreement: float = _setting(
        0.8,
        "CT_ROLLOUT_MIN_AGREEMENT",
        "share of paired (shadow) requests where both models predict the same label (classifiers)",
    )
    approval: str = _setting(
        "none",
        "CT_APPROVAL",
        "`required`: before the champion alias moves, a person approves in Airflow (Required Actions, or the "
        "HITL REST API), shown the decision record and the rollout analysis; a reject rolls back. Until then "
        "the candidate serves only what its rollout stage gives it (nothing, with `CT_ROLLOUT=direct`)",
    )
    approval_timeout_hours: float = _setting(
        72.0, "CT_APPROVAL_TIMEOUT_HOURS", "no answer by then counts as a reject: the candidate is rolled back"
    )
    approvers: tuple[str, ...] = _setting(
        (),
        "CT_APPROVERS",
        "Airflow user ids who may answer the approval (comma-separated); empty: anyone who may edit the DAG",
        shown="",
    )
    rollout_labels_decide: bool = _setting(
        True,
        "CT_ROLLOUT_LABELS_DECIDE",
        "when the realized gate metric was measured on a stage's live labels (`CT_DRIFT_MIN_ROWS` of them) and "
        "passed, the score-distribution and agreement checks are reported, not gating (a retrain after a change "
        "in the world should score differently); off: every check gates",
    )
    alert_webhook_url: str | None = _setting(
        None, "CT_ALERT_WEBHOOK_URL", "optional Slack-compatible webhook for alerts (always logged)"
    )
    drift_min_rows: int = _setting(
        200, "CT_DRIFT_MIN_ROWS", 'fewer logged rows in a window: "not enough data", no decision'
    )
    drift_sample_rows: int = _setting(
        20000, "CT_DRIFT_SAMPLE_ROWS", "seeded sample cap per side for Evidently (bounded time)"
    )
    drift_share_threshold: float = _setting(
        0.3, "CT_DRIFT_SHARE", "a window drifted when this share of features drifted"
    )
    drift_use_importance: bool = _setting(
        False, "CT_DRIFT_USE_IMPORTANCE", "weight the share by the champion's feature importance"
    )
    drift_windows_required: int = _setting(
        1, "CT_DRIFT_WINDOWS_REQUIRED", "retrain when this many (N) of the last M windows drifted"
    )
    drift_windows_considered: int = _setting(
        1, "CT_DRIFT_WINDOWS_CONSIDERED", "how many recent windows (M) the drift policy looks at"
    )
    drift_cooldown_hours: float = _setting(
        24.0, "CT_DRIFT_COOLDOWN_HOURS", "no drift-triggered retrain within this long of the last"
    )
    gpu_queue: str = _setting("gpu", "CT_GPU_QUEUE", "Celery queue the training task runs on")
    gpu_pool: str = _setting("gpu", "CT_GPU_POOL", "Airflow pool the training task runs in")
    training_timeout_minutes: int = _setting(
        120, "CT_TRAINING_TIMEOUT_MINUTES", "`execution_timeout` of the training task"
    )
    git_commit: str = _setting(
        "", "CT_GIT_COMMIT", "code commit recorded with each model (images set it); empty: `git rev-parse HEAD`"
    )
    seed: int = _setting(42, "CT_SEED", "seed for every random choice")

    def __post_init__(self) -> None:
        if len(self.s3_bucket) < 3:
            raise SettingsError(f"CT_S3_BUCKET {self.s3_bucket!r}: bucket names need at least 3 characters")
        if not 0.0 <= self.bad_row_budget < 1.0:
            raise SettingsError(f"CT_BAD_ROW_BUDGET must be in [0, 1), got {self.bad_row_budget}")
        overlap = set(self.categorical_columns) & set(self.numeric_columns)
        if overlap:
            raise SettingsError(f"columns listed as both categorical and numeric: {sorted(overlap)}")
        if self.task not in TASKS:
            raise SettingsError(f"CT_TASK {self.task!r}: expected one of {TASKS}")
        if self.gate_metric and self.gate_metric not in TASK_METRICS[self.task]:
            raise SettingsError(
                f"CT_GATE_METRIC {self.gate_metric!r} is not a {self.task} metric (CT_TASK={self.task}): "
                f"expected one of {TASK_METRICS[self.task]}"
            )
        if self.max_classes < 3:
            raise SettingsError(f"CT_MAX_CLASSES must be at least 3, got {self.max_classes}")
        if not self.label_column:
            raise SettingsError("CT_LABEL_COLUMN is empty: a model needs a label column")
        reserved = {self.label_column, self.row_id_column, self.event_time_column}
        if reserved & set(self.feature_columns):
            raise SettingsError(f"label/id/timestamp columns cannot be features: {sorted(reserved)}")
        fractions = (self.holdout_fraction, self.validation_fraction)
        if not all(0 < f < 1 for f in fractions) or sum(fractions) >= 0.9:
            raise SettingsError(
                "CT_HOLDOUT_FRACTION and CT_VALIDATION_FRACTION must be in (0, 1) and leave rows to train on"
            )
        if self.max_future_skew_minutes < 0:
            raise SettingsError(f"CT_MAX_FUTURE_SKEW_MINUTES must be >= 0, got {self.max_future_skew_minutes}")
        if not 0.0 <= self.window_shrink_tolerance <= 1.0:
            raise SettingsError(f"CT_WINDOW_SHRINK_TOLERANCE must be in [0, 1], got {self.window_shrink_tolerance}")
        if self.rollout not in ROLLOUT_STRATEGIES:
            raise SettingsError(f"CT_ROLLOUT {self.rollout!r}: expected one of {ROLLOUT_STRATEGIES}")
        if (
            not self.canary_steps
            or any(not 0 < b <= 100 for b in self.canary_steps)
            or list(self.canary_steps) != sorted(set(self.canary_steps))
        ):
            raise SettingsError(
                f"CT_CANARY_STEPS {','.join(f'{b:g}' for b in self.canary_steps)!r}: expected increasing percentages "
                "in (0, 100], e.g. 5,25,50"
            )
        if self.approval not in APPROVAL_MODES:
            raise SettingsError(f"CT_APPROVAL {self.approval!r}: expected one of {APPROVAL_MODES}")
        if self.approval_timeout_hours <= 0:
            raise SettingsError(f"CT_APPROVAL_TIMEOUT_HOURS must be > 0, got {self.approval_timeout_hours:g}")
        if self.rollout_insufficient_traffic not in INSUFFICIENT_TRAFFIC_ACTIONS:
            raise SettingsError(
                f"CT_ROLLOUT_INSUFFICIENT_TRAFFIC {self.rollout_insufficient_traffic!r}: expected one of "
                f"{INSUFFICIENT_TRAFFIC_ACTIONS}"
            )
        if self.window_shrink_action not in WINDOW_SHRINK_ACTIONS:
            raise SettingsError(
                f"CT_WINDOW_SHRINK_ACTION {self.window_shrink_action!r}: expected one of {WINDOW_SHRINK_ACTIONS}"
            )
        if self.deployment_target not in DEPLOYMENT_TARGETS:
            raise SettingsError(
                f"CT_DEPLOYMENT_TARGET {self.deployment_target!r}: expected one of {DEPLOYMENT_TARGETS}"
            )
        if self.distribution_guard_action not in DISTRIBUTION_GUARD_ACTIONS:
            raise SettingsError(
                f"CT_DISTRIBUTION_GUARD_ACTION {self.distribution_guard_action!r}: "
                f"expected one of {DISTRIBUTION_GUARD_ACTIONS}"
            )
        if self.distribution_guard_min_rows < 2:
            raise SettingsError(
                f"CT_DISTRIBUTION_GUARD_MIN_ROWS must be at least 2, got {self.distribution_guard_min_rows}"
            )
        if not 1 <= self.drift_windows_required <= self.drift_windows_considered:
            raise SettingsError("need 1 <= CT_DRIFT_WINDOWS_REQUIRED <= CT_DRIFT_WINDOWS_CONSIDERED")
        if not self.serving_poll_seconds > 0:
            raise SettingsError(f"CT_SERVING_POLL_SECONDS must be > 0, got {self.serving_poll_seconds}")
        if not 0.0 <= self.shadow_percent <= 100.0:
            raise SettingsError(f"CT_SHADOW_PERCENT must be in [0, 100], got {self.shadow_percent}")
        if self.shadow_queue_size < 1:
            raise SettingsError(f"CT_SHADOW_QUEUE_SIZE must be at least 1, got {self.shadow_queue_size}")
        if self.slice_column and self.slice_column not in self.categorical_columns:
            raise SettingsError(f"CT_SLICE_COLUMN {self.slice_column!r} must be one of the categorical columns")

    @property
    def row_id_column(self) -> str:
        """The id column of curated batches: the table's own, or the one ingest derives."""
        return self.id_column or DERIVED_ID_COLUMN

    @property
    def event_time_column(self) -> str:
        """The event-time column of curated batches: the table's own, or the ingest time ingest adds."""
        return self.timestamp_column or DERIVED_EVENT_TIME_COLUMN

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Model inputs in a fixed order: numeric first, then categorical."""
        return self.numeric_columns + self.categorical_columns

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.s3_bucket}/{key}"


@dataclass(frozen=True)
class SettingDeclaration:
    """One setting as declared on :class:`Settings`: what the loader and the docs table use."""

    name: str  # the Settings field
    env: str  # the environment variable, and the name of the Airflow Variable
    kind: str  # what the docs and error messages call its type
    default: Any
    doc: str
    secret: bool
    shown_default: str  # the default as the docs table shows it
    parse: Callable[[str], Any] = field(repr=False, compare=False)

    def value_from(self, raw: str, source: str) -> Any:
        """``raw`` parsed as this setting's type; :class:`SettingsError` names ``source`` and the variable."""
        try:
            return self.parse(raw)
        except ValueError as error:
            shown = "'***'" if self.secret else repr(raw)
            raise SettingsError(f"{source}{self.env}={shown}: {error}") from None


def _shown_default(value: Any) -> str:
    if value is None or value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, tuple):
        return f"`{','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in value)}`"
    return f"`{value}`"


@cache
def declared_settings() -> tuple[SettingDeclaration, ...]:
    """Every setting, in declaration order."""
    types = typing.get_type_hints(Settings)
    declarations = []
    for spec in fields(Settings):
        if "env" not in spec.metadata:
            raise TypeError(f"Settings.{spec.name} is not declared with _setting(): no variable, no docs")
        kind = spec.metadata["kind"] or _KINDS[types[spec.name]]
        declarations.append(
            SettingDeclaration(
                name=spec.name,
                env=spec.metadata["env"],
                kind="secret" if spec.metadata["secret"] else kind.label,
                default=spec.default,
                doc=spec.metadata["doc"],
                secret=spec.metadata["secret"],
                shown_default=spec.metadata["shown"] or _shown_default(spec.default),
                parse=kind.parse,
            )
        )
    return tuple(declarations)


def load_settings(
    environ: Mapping[str, str] | None = None,
    variables: VariableLookup | None = None,
    model: str | ModelFile | None = None,
) -> Settings:
    """Build :class:`Settings`: each from ``environ`` (default ``os.environ``), else the model file, else
    ``variables``, else its default.

    ``model`` is a model file (:mod:`model_files`) or its name (``CT_MODEL`` when omitted; none when
    that is empty too). ``variables`` is asked only for settings that neither the environment nor the
    model file sets, one call each; without it (what DAG files do at parse time) nothing but the
    environment and the model file is read. An empty environment value counts as unset; in a model
    file, empty is a value (``categorical: []``, ``id: null``). Raises :class:`SettingsError` naming the
    variable (and the model file) on a malformed value.
    """
    env = os.environ if environ is None else environ
    model_file = _model_file(model if model is not None else env.get("CT_MODEL", ""), env)
    from_file = model_file.values if model_file else {}
    values: dict[str, Any] = {}
    for declared in declared_settings():
        raw, source = env.get(declared.env), ""
        if not raw and declared.name in from_file:
            values[declared.name] = declared.value_from(from_file[declared.name], f"{model_file.path}: ")  # type: ignore[union-attr]
            continue
        if not raw and variables is not None:
            raw, source = variables(declared.env), "Airflow Variable "
        if raw:
            values[declared.name] = declared.value_from(raw, source)
    if model_file is None:
        return Settings(**values)
    values["model"] = model_file.name
    try:
        return Settings(**values)
    except SettingsError as error:
        raise SettingsError(f"{model_file.path}: {error}") from None


def _model_file(model: str | ModelFile, env: Mapping[str, str]) -> ModelFile | None:
    if not isinstance(model, str):
        return model
    if not model:
        return None
    from include.continuous_training.model_files import find_model_file

    return find_model_file(model, env.get("CT_MODELS_DIR") or DEFAULT_MODELS_DIR)


def runtime_settings(environ: Mapping[str, str] | None = None, model: str | ModelFile | None = None) -> Settings:
    """Settings for code running inside an Airflow task: environment, then Airflow Variables, then defaults.

    Call it in a task body, never at the top of a DAG file. Variables are read through
    ``airflow.sdk.Variable.get`` (secrets backend, ``AIRFLOW_VAR_<NAME>``, metadata DB, as Airflow
    resolves them), only for settings whose environment variable is unset. Inside a task, with no
    custom secrets backend configured, one ``Variable.keys()`` request first lists the names that
    exist, so only those are fetched; otherwise every unset setting costs one lookup. Outside a task
    the Task SDK still resolves ``AIRFLOW_VAR_<NAME>`` and configured secrets backends (no metadata
    DB); where the Task SDK is not installed this is :func:`load_settings` (environment and defaults).
    """
    env = os.environ if environ is None else environ
    try:
        from airflow.sdk import Variable, conf
    except ImportError:
        return load_settings(env, model=model)
    # AIRFLOW_VAR_* come from the process environment, whatever ``environ`` the settings are read from.
    return load_settings(env, variables=airflow_variable_lookup(Variable, conf, os.environ), model=model)


def task_settings(model: str | ModelFile | None = None) -> Settings:
    """:func:`runtime_settings` for a task body (of ``model``'s DAGs): a malformed value fails the task at
    once, without retries."""
    with task_outcome():
        return runtime_settings(model=model)


def airflow_variable_lookup(variable_api: Any, airflow_conf: Any, environ: Mapping[str, str]) -> VariableLookup:
    """A :data:`VariableLookup` over the Task SDK's ``Variable`` (``variable_api``) and ``conf``.

    ``Variable.keys()`` sees only the metadata DB, so its listing decides what to fetch only where
    nothing else can hold a Variable: no ``[workers] secrets_backend`` / ``[secrets] backend``
    configured; the ``AIRFLOW_VAR_*`` names in ``environ`` (the process environment, which Airflow's
    environment-variables backend reads) are added to it. Where no listing can be had (outside a
    task there is no API to ask) every name is looked up.
    """
    from airflow.sdk.exceptions import AirflowRuntimeError

    listed: set[str] | None = None
    listing_tried = False

    def names_that_exist() -> set[str] | None:
        nonlocal listed, listing_tried
        if not listing_tried:
            listing_tried = True
            custom_backend = airflow_conf.get("workers", "secrets_backend", fallback="") or airflow_conf.get(
                "secrets", "backend", fallback=""
            )
            if not custom_backend:
                try:
                    stored = list(variable_api.keys())
                except (ImportError, AirflowRuntimeError):  # no task supervisor to ask, or an API without it
                    return None
                from_env = (name.removeprefix("AIRFLOW_VAR_") for name in environ if name.startswith("AIRFLOW_VAR_"))
                # Upper-cased: a database with case-insensitive keys finds "ct_seed" for CT_SEED.
                listed = {str(name).upper() for name in (*stored, *from_env)}
        return listed

    def lookup(name: str) -> str | None:
        existing = names_that_exist()
        if existing is not None and name.upper() not in existing:
            return None
        value = variable_api.get(name, default=None)
        return None if value is None else str(value)

    return lookup


README_TABLE_START = (
    "<!-- settings table: generated by `python -m include.continuous_training.config --markdown`; "
    "edit config.py, not this table -->"
)
README_TABLE_END = "<!-- end of settings table -->"


def update_readme_table(readme: Path) -> bool:
    """Rewrite the settings table between the README's markers; True when it changed."""
    text = readme.read_text()
    head, rest = text.split(README_TABLE_START, 1)
    _, tail = rest.split(README_TABLE_END, 1)
    updated = f"{head}{README_TABLE_START}\n{settings_table_markdown()}{README_TABLE_END}{tail}"
    if updated != text:
        readme.write_text(updated)
    return updated != text


def settings_table_markdown() -> str:
    """The Markdown table of every setting (README.md's "Settings" section is this, verbatim)."""
    rows = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for declared in declared_settings():
        cells = (f"`{declared.env}`", declared.kind, declared.shown_default, declared.doc)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``--markdown``: print the settings table; otherwise check the environment's settings and print them."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m include.continuous_training.config",
        description="Check the settings this environment gives (exit 2 when one is wrong), or print their table.",
    )
    parser.add_argument("--markdown", action="store_true", help="print the settings table (README.md, Settings)")
    parser.add_argument("--update-readme", type=Path, metavar="README", help="rewrite the table in this README")
    args = parser.parse_args(argv)
    if args.update_readme:
        print("updated" if update_readme_table(args.update_readme) else "up to date")
        return 0
    if args.markdown:
        print(settings_table_markdown(), end="")
        return 0
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"settings: {error}")
        return 2
    for declared in declared_settings():
        value = getattr(settings, declared.name)
        shown = "***" if declared.secret and value else _shown_default(value).strip("`")
        print(f"{declared.env}={shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
