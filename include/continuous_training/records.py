"""What one stage hands the next, as typed records (XCom carries them as plain JSON dicts).

Each is a ``TypedDict``: it *is* the dict Airflow serialises to XCom, and mypy checks every key a
stage writes or reads, so a renamed key fails type-checking instead of a run. Standard library only:
DAG files import these for their task signatures.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

Metrics = dict[str, float | None]
"""Metric name → value; None where a metric is undefined (ROC AUC of a one-class slice): XCom is strict JSON."""


class TrainingData(TypedDict):
    """``assemble_training_data`` → the splits in S3 and their manifest (never the rows themselves)."""

    data_hash: str
    dataset_version: str  # e.g. "transactions@v12" (dataset_versions.py)
    manifest_uri: str
    rows: dict[str, int]
    train_uri: str
    validation_uri: str
    holdout_uri: str


class TrainedModel(TypedDict):
    """``train_challenger`` → the MLflow run and logged model of the challenger."""

    run_id: str
    run_url: str
    model_id: str
    model_uri: str
    device: str | None
    best_iteration: int
    fit_seconds: float | None
    data_hash: str | None


class ChallengerScores(TypedDict):
    """The challenger on the holdout: overall and per slice."""

    model_uri: str
    metrics: Metrics
    slices: dict[str, Metrics]
    score_std: float


class ChampionScores(TypedDict):
    """The champion on the same holdout; only ``version`` and ``error`` when it could not score it."""

    version: str
    error: NotRequired[str]
    model_uri: NotRequired[str]
    max_score_difference: NotRequired[float]
    is_challenger: NotRequired[bool]
    metrics: NotRequired[Metrics]
    slices: NotRequired[dict[str, Metrics]]


class Evaluation(TypedDict):
    """``evaluate_challenger`` → both models on one holdout, and the paired bootstrap of the gain on the gate metric."""

    holdout_uri: str
    holdout_rows: int
    threshold: float
    slice_column: str
    task: NotRequired[str]  # CT_TASK of the challenger (absent in records from before tasks: binary)
    gate_metric: NotRequired[str]  # the metric the bootstrap gain is on (absent: roc_auc)
    challenger: ChallengerScores
    champion: ChampionScores | None
    bootstrap: dict[str, float] | None


class Deployment(TypedDict):
    """``deploy_challenger`` → the version now served, and the champion it replaced."""

    version: str
    previous: str | None
