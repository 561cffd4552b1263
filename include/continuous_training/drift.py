"""Daily drift check of the endpoint's traffic against the champion's reference sample.

- :func:`read_inference_window` reads the inference log rows of a time window from S3: by default
  only those the champion answered (:func:`champion_served`); a rollout's candidate rows and the
  champion's off-path (shadow) scores are not the traffic the reference describes.
- :func:`load_reference` reads the reference sample logged with the *current* champion, so the
  reference follows the champion when the alias moves.
- :func:`compute_drift` runs Evidently 0.7's ``DataDriftPreset`` on the features plus a ``ValueDrift``
  on the prediction score (reference scores come from the champion itself), on seeded samples of at
  most ``cap`` rows per side, and summarises per-feature verdicts.
- :func:`decide_retraining` is the pure policy: drift in N of the last M windows, a cooldown after the
  last retrain, no trigger while a training run is active, and a forced retrain when labelled feedback
  shows the champion below the quality floor.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from include.continuous_training.config import Settings
from include.continuous_training.storage import (
    S3Client,
    get_json,
    list_objects,
    put_bytes,
    put_json,
    read_parquet_object,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

Action = Literal["retrain", "no_drift", "skip"]


# -- data ---------------------------------------------------------------------------------------------
def champion_served(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose score answered the caller and came from the champion (``variant`` champion,
    ``served`` true). Rows logged before rollouts existed have neither column: they are the champion's."""
    keep = None
    if "variant" in rows.columns:
        keep = rows["variant"].isna() | (rows["variant"] == "champion")
    if "served" in rows.columns:
        served = rows["served"].map(lambda value: value is None or value != value or bool(value))  # null: served
        keep = served if keep is None else keep & served.astype(bool)
    return rows if keep is None else rows[keep.astype(bool)].reset_index(drop=True)


def read_inference_window(
    s3: S3Client, settings: Settings, start: datetime, end: datetime, champion_only: bool = True
) -> pd.DataFrame:
    """Inference-log rows with ``start <= predicted_at < end`` (UTC), from the date partitions it spans.

    ``champion_only``: only the rows the champion answered (:func:`champion_served`), which is what
    drift and realized performance are about; False: every variant's rows too (rollout analysis).
    """
    import pandas as pd

    frames = []
    day = start.date()
    while day <= end.date():
        prefix = f"{settings.inference_prefix}date={day:%Y-%m-%d}/"
        for ref in list_objects(s3, settings.s3_bucket, prefix):
            frames.append(read_parquet_object(s3, settings.s3_bucket, ref.key)[0])
        day += timedelta(days=1)
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    stamp = rows["predicted_at"].astype(float)
    rows = rows[(stamp >= start.timestamp()) & (stamp < end.timestamp())].reset_index(drop=True)
    return champion_served(rows) if champion_only else rows


def read_feedback(s3: S3Client, settings: Settings) -> pd.DataFrame:
    """Late labels: Parquet or CSV objects under ``feedback/`` with ``prediction_id`` and the label column."""
    import pandas as pd

    frames = []
    for ref in list_objects(s3, settings.s3_bucket, settings.feedback_prefix):
        body = io.BytesIO(s3.get_object(Bucket=settings.s3_bucket, Key=ref.key)["Body"].read())
        frame = pd.read_parquet(body) if ref.key.endswith(".parquet") else pd.read_csv(body)
        frames.append(frame[["prediction_id", settings.label_column]])
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["prediction_id", settings.label_column])
    )


def load_reference(settings: Settings) -> tuple[pd.DataFrame, str, Any]:
    """(reference sample, champion version, champion model) — the reference travels with the champion."""
    import mlflow
    import pandas as pd

    from include.continuous_training.features import REFERENCE_ARTIFACT
    from include.continuous_training.registry import CHAMPION, load_model, tracking_client, version_by_alias

    champion = version_by_alias(tracking_client(settings), settings.model_name, CHAMPION)
    if champion is None:
        raise LookupError(f"{settings.model_name} has no champion yet: nothing to compare traffic with")
    path = mlflow.artifacts.download_artifacts(f"runs:/{champion.run_id}/{REFERENCE_ARTIFACT}")
    model = load_model(f"models:/{settings.model_name}/{champion.version}")
    return pd.read_parquet(path), str(champion.version), model


# -- drift --------------------------------------------------------------------------------------------
def sample_rows(frame: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """A seeded sample of at most ``cap`` rows (the whole frame when it is smaller)."""
    return frame.sample(n=cap, random_state=seed) if len(frame) > cap else frame


def _drifted(method: str, value: float, threshold: float) -> bool:
    """p-value tests drift below the threshold; distances drift at or above it."""
    return value < threshold if "p_value" in method else value >= threshold


def compute_drift(
    reference: pd.DataFrame, current: pd.DataFrame, model: Any, settings: Settings, cap: int | None = None
) -> tuple[dict[str, Any], Any]:
    """Evidently on features + score; returns (summary, snapshot). Both sides sampled to ``cap`` rows."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    cap = cap or settings.drift_sample_rows
    features = list(settings.feature_columns)
    reference = sample_rows(reference, cap, settings.seed).reset_index(drop=True)
    current = sample_rows(current, cap, settings.seed).reset_index(drop=True)
    # The champion scores its own reference the way the endpoint logs ``score``: P(positive),
    # P(predicted class) or the predicted value (regression: any range, compared as a number).
    spec = model.spec
    reference = reference.assign(score=spec.scores(spec.predict(model.booster, spec.matrix(reference))))
    definition = DataDefinition(
        numerical_columns=[*settings.numeric_columns, "score"], categorical_columns=list(settings.categorical_columns)
    )
    columns = [*features, "score"]
    snapshot = Report([DataDriftPreset(columns=features), ValueDrift(column="score")]).run(
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
    )
    per_column: dict[str, dict[str, Any]] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type") == "evidently:metric_v2:ValueDrift":
            value, threshold, method = float(metric["value"]), float(config["threshold"]), str(config["method"])
            per_column[config["column"]] = {
                "method": method,
                "value": value,
                "threshold": threshold,
                "drifted": _drifted(method, value, threshold),
            }
    drifted = [c for c in features if per_column.get(c, {}).get("drifted")]
    importance = feature_importance(model)
    total_weight = sum(importance.get(c, 0.0) for c in features) or 1.0
    summary = {
        "status": "measured",
        "reference_rows": len(reference),
        "current_rows": len(current),
        "drifted_features": drifted,
        "drift_share": len(drifted) / len(features),
        "weighted_drift_share": sum(importance.get(c, 0.0) for c in drifted) / total_weight,
        "prediction_drift": bool(per_column.get("score", {}).get("drifted")),
        "columns": per_column,
    }
    return summary, snapshot


def feature_importance(model: Any) -> dict[str, float]:
    """The champion's total-gain importance per feature (0 for features it never split on)."""
    scores = model.booster.get_score(importance_type="total_gain")
    return {name: float(scores.get(name, 0.0)) for name in model.spec.feature_names}


def realized_performance(
    window: pd.DataFrame, feedback: pd.DataFrame, settings: Settings, spec: Any = None
) -> dict[str, Any] | None:
    """The served predictions against the labels that arrived; None when there are too few.

    ``spec`` is the champion's :class:`FeatureSpec` (labels are encoded as it encodes them; without
    one, a binary 0/1 label). Binary: the classification metrics of the logged ``score`` (ROC AUC, …);
    multiclass: accuracy and macro F1 of the logged ``label``; regression: RMSE, MAE and R² of the
    logged ``score`` (the prediction).
    """
    import numpy as np
    import pandas as pd

    from include.continuous_training.evaluation import classification_metrics, regression_metrics
    from include.continuous_training.features import FeatureSpec

    if window.empty or feedback.empty:
        return None
    spec = spec or FeatureSpec((), {}, settings.label_column)
    truth = feedback.rename(columns={spec.label: "ct_true_label"})[["prediction_id", "ct_true_label"]]
    joined = window.merge(truth, on="prediction_id", how="inner")
    if len(joined) < settings.drift_min_rows:
        return None
    labels = spec.label_vector(pd.DataFrame({spec.label: joined["ct_true_label"]}))
    if spec.is_classifier and len(np.unique(labels)) < 2:
        return None
    scores = joined["score"].to_numpy(dtype=float)
    if spec.task == "regression":
        return {"labelled_rows": len(joined), **regression_metrics(labels, scores)}
    if spec.task == "multiclass":
        from sklearn import metrics

        predicted = spec.label_vector(pd.DataFrame({spec.label: joined["label"]}))
        return {
            "labelled_rows": len(joined),
            "accuracy": float(metrics.accuracy_score(labels, predicted)),
            "macro_f1": float(metrics.f1_score(labels, predicted, average="macro", zero_division=0)),
            "rows": float(len(joined)),
        }
    return {"labelled_rows": len(joined), **classification_metrics(labels, scores, settings.decision_threshold)}


# -- the policy -----------------------------------------------------------------------------------------
@dataclass
class RetrainDecision:
    action: Action
    reasons: list[str]
    drifted_windows: int
    windows_considered: int
    thresholds: dict[str, Any]
    current: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_drifted(summary: dict[str, Any], settings: Settings) -> bool:
    if summary.get("status") != "measured":
        return False
    share = summary["weighted_drift_share"] if settings.drift_use_importance else summary["drift_share"]
    return bool(share >= settings.drift_share_threshold)


def decide_retraining(
    current: dict[str, Any],
    history: list[dict[str, Any]],
    settings: Settings,
    now: datetime,
    last_retrain_at: datetime | None,
    training_active: bool,
) -> RetrainDecision:
    """Pure: retrain when N of the last M windows drifted (this one included) or labels show the champion
    below the floor, unless a retrain happened within the cooldown or one is running now."""
    from include.continuous_training.evaluation import gate_metric

    metric = gate_metric(settings)
    thresholds = {
        "drift_share": settings.drift_share_threshold,
        "weighted_by_importance": settings.drift_use_importance,
        "n_of_m": [settings.drift_windows_required, settings.drift_windows_considered],
        "cooldown_hours": settings.drift_cooldown_hours,
        "roc_auc_floor": settings.roc_auc_floor,
        "gate_metric": metric.name,
        "metric_floor": metric.floor,
        "min_rows": settings.drift_min_rows,
    }
    windows = [current, *history][: settings.drift_windows_considered]
    drifted = sum(window_drifted(w, settings) for w in windows)

    def record(action: Action, reasons: list[str]) -> RetrainDecision:
        return RetrainDecision(action, reasons, drifted, len(windows), thresholds, current)

    if current.get("status") != "measured":
        return record("skip", [f"not enough data: {current.get('reason', 'no rows')}"])
    reasons = []
    performance = current.get("realized_performance")
    realized = performance.get(metric.name) if performance else None
    if performance and realized is not None and metric.floor is not None and not metric.meets_floor(realized):
        side = "below" if metric.higher_is_better else "above"
        reasons.append(
            f"realized {metric.label} {realized:.4f} on {performance['labelled_rows']} labelled rows "
            f"is {side} the floor {metric.floor:.4f} ({metric.direction}; {metric.floor_setting})"
        )
    if drifted >= settings.drift_windows_required:
        share = current["weighted_drift_share"] if settings.drift_use_importance else current["drift_share"]
        reasons.append(
            f"drift in {drifted} of the last {len(windows)} windows (today {share:.0%} of features: "
            f"{', '.join(current['drifted_features']) or 'none'})"
        )
    if not reasons:
        return record(
            "no_drift",
            [f"drift in {drifted} of the last {len(windows)} windows; {settings.drift_windows_required} needed"],
        )
    if training_active:
        return record("no_drift", [*reasons, "but a train_and_deploy run is active: not triggering another"])
    if last_retrain_at is not None and now - last_retrain_at < timedelta(hours=settings.drift_cooldown_hours):
        return record(
            "no_drift",
            [
                *reasons,
                f"but the last retrain was at {last_retrain_at.isoformat()}, "
                f"inside the {settings.drift_cooldown_hours}h cooldown",
            ],
        )
    return record("retrain", reasons)


# -- records in S3 --------------------------------------------------------------------------------------
def report_prefix(settings: Settings, day: str) -> str:
    return f"{settings.reports_prefix}drift/{day}/"


def save_report(s3: S3Client, settings: Settings, day: str, summary: dict[str, Any], snapshot: Any | None) -> str:
    """``summary.json`` (+ ``report.html`` / ``report.json`` when measured) under ``reports/drift/<day>/``."""
    import json
    import tempfile
    from pathlib import Path

    prefix = report_prefix(settings, day)
    if snapshot is not None:
        with tempfile.TemporaryDirectory() as tmp:
            html = Path(tmp) / "report.html"
            snapshot.save_html(str(html))
            put_bytes(s3, settings.s3_bucket, prefix + "report.html", html.read_bytes(), "text/html")
        put_bytes(
            s3,
            settings.s3_bucket,
            prefix + "report.json",
            json.dumps(snapshot.dict(), default=str).encode(),
            "application/json",
        )
    put_json(s3, settings.s3_bucket, prefix + "summary.json", summary)
    return settings.s3_uri(prefix + ("report.html" if snapshot is not None else "summary.json"))


def drift_history(s3: S3Client, settings: Settings, before_day: str, limit: int) -> list[dict[str, Any]]:
    """Summaries of earlier windows, newest first."""
    days = sorted(
        {
            ref.key.split("/")[-2]
            for ref in list_objects(s3, settings.s3_bucket, f"{settings.reports_prefix}drift/")
            if ref.key.endswith("summary.json")
        },
        reverse=True,
    )
    out = []
    for day in [d for d in days if d < before_day][:limit]:
        summary = get_json(s3, settings.s3_bucket, report_prefix(settings, day) + "summary.json")
        if summary:
            out.append(summary)
    return out


def last_retrain_time(s3: S3Client, settings: Settings) -> datetime | None:
    """When the last drift-triggered retrain was requested (from ``reports/drift/triggers/``)."""
    stamps = [
        ref.key.rsplit("/", 1)[-1].removesuffix(".json")
        for ref in list_objects(s3, settings.s3_bucket, f"{settings.reports_prefix}drift/triggers/")
    ]
    return datetime.fromisoformat(max(stamps)) if stamps else None


def record_trigger(s3: S3Client, settings: Settings, when: datetime, decision: dict[str, Any]) -> None:
    put_json(s3, settings.s3_bucket, f"{settings.reports_prefix}drift/triggers/{when.isoformat()}.json", decision)


# -- what the DAG tasks call ------------------------------------------------------------------------------
def window_key(end: datetime) -> str:
    return f"{end.astimezone(UTC):%Y-%m-%dT%H%M%S}"


def measure_window(s3: S3Client, settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Read, measure, save and log one window; returns its summary (small, for XCom)."""
    import time

    key = window_key(end)
    base: dict[str, Any] = {"window": {"start": start.isoformat(), "end": end.isoformat(), "key": key}}
    started = time.perf_counter()
    rows = read_inference_window(s3, settings, start, end)
    if len(rows) < settings.drift_min_rows:
        summary = {
            **base,
            "status": "insufficient",
            "rows": len(rows),
            "reason": f"{len(rows)} logged rows in the window, {settings.drift_min_rows} needed",
        }
        summary["report_url"] = save_report(s3, settings, key, summary, None)
        return summary
    try:
        reference, version, model = load_reference(settings)
    except LookupError as error:
        summary = {**base, "status": "insufficient", "rows": len(rows), "reason": str(error)}
        summary["report_url"] = save_report(s3, settings, key, summary, None)
        return summary
    measured, snapshot = compute_drift(reference, rows, model, settings)
    summary = {
        **base,
        **measured,
        "rows": len(rows),
        "champion_version": version,
        "realized_performance": realized_performance(rows, read_feedback(s3, settings), settings, model.spec),
        "seconds": round(time.perf_counter() - started, 2),
    }
    summary["report_url"] = save_report(s3, settings, key, summary, snapshot)
    summary["mlflow_report_url"] = _log_to_mlflow(settings, summary, snapshot)
    return summary


def _log_to_mlflow(settings: Settings, summary: dict[str, Any], snapshot: Any) -> str:
    """Log the window to MLflow; return the UI address of its HTML report (for the task's extra link)."""
    import tempfile
    from pathlib import Path

    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(f"{settings.mlflow_experiment}-drift")
    with mlflow.start_run(run_name=f"drift {summary['window']['key']}") as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_metrics(
            {
                "drift_share": summary["drift_share"],
                "weighted_drift_share": summary["weighted_drift_share"],
                "rows": summary["rows"],
                "prediction_drift": float(summary["prediction_drift"]),
            }
        )
        mlflow.set_tags({"ct.champion_version": summary["champion_version"], "ct.report_uri": summary["report_url"]})
        html = Path(tmp) / "drift_report.html"
        snapshot.save_html(str(html))
        mlflow.log_artifact(str(html))
        mlflow.log_dict(summary, "drift_summary.json")
    return (
        f"{settings.mlflow_tracking_uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        "/artifacts/drift_report.html"
    )


def decide_and_record(
    s3: S3Client, settings: Settings, summary: dict[str, Any], now: datetime, training_active: bool
) -> tuple[RetrainDecision, dict[str, Any] | None]:
    """Apply the policy with the stored history; record the decision; the conf to trigger with (or None)."""
    key = summary["window"]["key"]
    history = drift_history(s3, settings, key, settings.drift_windows_considered - 1)
    decision = decide_retraining(summary, history, settings, now, last_retrain_time(s3, settings), training_active)
    put_json(s3, settings.s3_bucket, report_prefix(settings, key) + "decision.json", decision.as_dict())
    if decision.action != "retrain":
        return decision, None
    record_trigger(s3, settings, now, decision.as_dict())
    conf = {
        "reason": "; ".join(decision.reasons)[:500],
        "report_uri": summary["report_url"],
        "decision": {
            "action": decision.action,
            "reasons": decision.reasons,
            "drifted_windows": decision.drifted_windows,
            "windows_considered": decision.windows_considered,
        },
    }
    return decision, conf
