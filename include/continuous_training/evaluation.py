"""Score challenger and champion on the same holdout, and decide whether the challenger is promoted.

:func:`decide_promotion` is a pure function of the evaluation and the thresholds; it returns a
decision record (inputs, thresholds, intervals, verdict, reasons) that is logged to MLflow, printed
in the task log and attached to the registered version.

Gates, in order:

1. **floor** — challenger ROC AUC >= ``roc_auc_floor`` (the only gate for the first model ever);
2. **not constant** — the challenger's holdout scores are not all the same;
3. **beats champion** — ROC AUC gain >= ``min_delta`` and the paired-bootstrap 95 % interval of the
   gain does not reach below ``-loss_tolerance``;
4. **differs from champion** — the challenger's holdout scores are not identical to the champion's
   (the same data and parameters give the same model: promoting it would only churn versions);
5. **slices** — no slice of ``slice_column`` (with at least ``min_slice_rows`` rows and both
   classes) loses more than ``slice_tolerance`` ROC AUC against the champion.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from include.continuous_training.config import Settings
from include.continuous_training.features import DECISION_ARTIFACT, EVALUATION_ARTIFACT
from include.continuous_training.records import ChampionScores, Evaluation, Metrics, TrainingData

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

Verdict = Literal["promote", "reject"]


# -- metrics ----------------------------------------------------------------------------------------
def classification_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> Metrics:
    """ROC AUC, PR AUC, log loss, Brier, accuracy and F1 at ``threshold``.

    ROC AUC and PR AUC are None (not NaN) on one class: the record travels through XCom, which is
    strict JSON.
    """
    import numpy as np
    from sklearn import metrics

    y = np.asarray(y)
    scores = np.clip(np.asarray(scores, dtype=float), 1e-7, 1 - 1e-7)
    predicted = (scores >= threshold).astype(int)
    two_classes = len(np.unique(y)) == 2
    return {
        "roc_auc": float(metrics.roc_auc_score(y, scores)) if two_classes else None,
        "pr_auc": float(metrics.average_precision_score(y, scores)) if two_classes else None,
        "log_loss": float(metrics.log_loss(y, scores, labels=[0, 1])),
        "brier": float(metrics.brier_score_loss(y, scores)),
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "f1": float(metrics.f1_score(y, predicted, zero_division=0)),
        "positive_rate": float(np.mean(y)),
        "rows": float(len(y)),
    }


def weighted_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for each row of ``weights`` (shape ``[B, n]``), ties counted half, in O(B·n).

    A bootstrap resample is a vector of multiplicities, so one sort of the scores serves every
    resample: this is what makes a 1,000-sample paired bootstrap cost about a second.
    """
    import numpy as np

    order = np.argsort(scores, kind="mergesort")
    sorted_scores, sorted_y = scores[order], y[order]
    w = weights[:, order]
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    pos = np.add.reduceat(w * (sorted_y == 1), starts, axis=1)
    neg = np.add.reduceat(w * (sorted_y == 0), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((pos * (neg_below + 0.5 * neg)).sum(axis=1) / total)


def paired_bootstrap_auc_gain(
    y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, samples: int, seed: int, chunk: int = 100
) -> dict[str, float]:
    """Mean and 95 % percentile interval of ROC AUC(challenger) - ROC AUC(champion) on shared resamples."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(y)
    gains = []
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(size)]).astype(float)
        gains.append(weighted_auc(y, challenger, weights) - weighted_auc(y, champion, weights))
    gain = np.concatenate(gains)
    gain = gain[np.isfinite(gain)]
    return {
        "mean": float(np.mean(gain)),
        "ci_low": float(np.percentile(gain, 2.5)),
        "ci_high": float(np.percentile(gain, 97.5)),
        "samples": float(len(gain)),
    }


def slice_metrics(
    frame: pd.DataFrame, y: np.ndarray, scores: np.ndarray, column: str, threshold: float
) -> dict[str, Metrics]:
    import numpy as np

    values = frame[column].astype(str).to_numpy()
    return {str(v): classification_metrics(y[values == v], scores[values == v], threshold) for v in np.unique(values)}


# -- evaluation (I/O) -------------------------------------------------------------------------------
def evaluate_challenger(s3: Any, settings: Settings, data: TrainingData, challenger_uri: str) -> Evaluation:
    """Score the challenger and the current champion on the SAME holdout; return a JSON-able report."""
    import numpy as np

    from include.continuous_training.registry import CHAMPION, load_model, tracking_client, version_by_alias
    from include.continuous_training.storage import read_parquet_uri

    holdout = read_parquet_uri(s3, settings, data["holdout_uri"])
    y = holdout[settings.label_column].to_numpy().astype(int)
    threshold = settings.decision_threshold
    challenger = load_model(challenger_uri)
    chal_scores = challenger.booster.inplace_predict(challenger.spec.matrix(holdout))
    report = Evaluation(
        holdout_uri=data["holdout_uri"],
        holdout_rows=len(holdout),
        threshold=threshold,
        slice_column=settings.slice_column,
        challenger={
            "model_uri": challenger_uri,
            "metrics": classification_metrics(y, chal_scores, threshold),
            "slices": slice_metrics(holdout, y, chal_scores, settings.slice_column, threshold),
            "score_std": float(np.std(chal_scores)),
        },
        champion=None,
        bootstrap=None,
    )
    client = tracking_client(settings)
    champion_version = version_by_alias(client, settings.model_name, CHAMPION)
    if champion_version is None:
        return report
    champion_uri = f"models:/{settings.model_name}@{CHAMPION}"
    try:
        champion = load_model(champion_uri)
        champ_scores = champion.booster.inplace_predict(champion.spec.matrix(holdout))
    except Exception as error:  # a champion that cannot score today's columns is reported, not fatal
        log.warning("champion %s cannot score the holdout: %s", champion_uri, error)
        report["champion"] = {"version": str(champion_version.version), "error": f"{type(error).__name__}: {error}"}
        return report
    report["champion"] = ChampionScores(
        version=str(champion_version.version),
        model_uri=champion_uri,
        max_score_difference=float(np.max(np.abs(chal_scores - champ_scores))) if len(y) else 0.0,
        # A re-run of the DAG run that registered the champion evaluates the champion against itself.
        is_challenger=challenger_uri in (champion_version.source, f"models:/{champion_version.model_id}"),
        metrics=classification_metrics(y, champ_scores, threshold),
        slices=slice_metrics(holdout, y, champ_scores, settings.slice_column, threshold),
    )
    report["bootstrap"] = paired_bootstrap_auc_gain(
        y, chal_scores, champ_scores, settings.bootstrap_samples, settings.seed
    )
    return report


def _defined(value: float | None) -> float:
    """A metric as a float; an undefined one (None) is NaN, which fails every comparison."""
    return float("nan") if value is None else value


# -- the decision -------------------------------------------------------------------------------------
@dataclass
class Gate:
    name: str
    passed: bool
    detail: str


@dataclass
class DecisionRecord:
    verdict: Verdict
    reasons: list[str]
    gates: list[Gate]
    thresholds: dict[str, float]
    challenger_metrics: Metrics
    champion_version: str | None
    champion_metrics: Metrics | None
    auc_gain: dict[str, float] | None
    dry_run: bool = False
    slices: dict[str, dict[str, float | None]] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.verdict == "promote" and not self.dry_run

    def summary(self) -> str:
        head = "PROMOTE" if self.verdict == "promote" else "REJECT"
        if self.dry_run:
            head += " (dry run: nothing changes)"
        return f"{head}: " + "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DecisionRecord:
        """The record back from :meth:`as_dict` (what XCom and ``evaluation/decision.json`` hold)."""
        return cls(**{**raw, "gates": [Gate(**gate) for gate in raw["gates"]]})


def decide_promotion(evaluation: Evaluation, settings: Settings, dry_run: bool = False) -> DecisionRecord:
    """The promotion decision as a record; pure (no I/O), so it is tested on numbers alone."""
    challenger = evaluation["challenger"]
    metrics = challenger["metrics"]
    auc = _defined(metrics["roc_auc"])  # undefined (one class) fails the floor
    thresholds = {
        "roc_auc_floor": settings.roc_auc_floor,
        "min_delta": settings.min_delta,
        "loss_tolerance": settings.loss_tolerance,
        "slice_tolerance": settings.slice_tolerance,
        "min_slice_rows": float(settings.min_slice_rows),
    }
    gates = [
        Gate("floor", auc >= settings.roc_auc_floor, f"ROC AUC {auc:.4f} vs floor {settings.roc_auc_floor:.4f}"),
        Gate(
            "not_constant",
            challenger["score_std"] > 1e-6,
            f"holdout score std {challenger['score_std']:.2e}",
        ),
    ]
    champion = evaluation["champion"]
    gain = evaluation["bootstrap"]
    slices: dict[str, dict[str, float | None]] = {}
    champion_metrics = None
    if champion and "metrics" in champion and gain:
        champion_metrics = champion["metrics"]
        delta = auc - _defined(champion_metrics["roc_auc"])
        gates.append(
            Gate(
                "beats_champion",
                delta >= settings.min_delta and gain["ci_low"] >= -settings.loss_tolerance,
                f"ROC AUC gain {delta:+.4f} (min {settings.min_delta:+.4f}), bootstrap 95% CI "
                f"[{gain['ci_low']:+.4f}, {gain['ci_high']:+.4f}] (lower bound may not be below "
                f"{-settings.loss_tolerance:+.4f})",
            )
        )
        worst: tuple[str, float] | None = None
        for name, chal_slice in challenger["slices"].items():
            champ_slice = champion["slices"].get(name)
            gated = (
                champ_slice is not None
                and _defined(chal_slice["rows"]) >= settings.min_slice_rows
                and 0 < _defined(chal_slice["positive_rate"]) < 1
            )
            chal_auc, champ_auc = chal_slice["roc_auc"], champ_slice["roc_auc"] if champ_slice else None
            slice_delta = chal_auc - champ_auc if chal_auc is not None and champ_auc is not None else None
            slices[name] = {"rows": chal_slice["rows"], "roc_auc_delta": slice_delta, "gated": float(gated)}
            if gated and slice_delta is not None and (worst is None or slice_delta < worst[1]):
                worst = (name, slice_delta)
        difference = champion.get("max_score_difference")
        if difference is not None and not champion.get("is_challenger", False):
            gates.append(
                Gate(
                    "differs_from_champion",
                    difference > 1e-9,
                    f"largest holdout score difference to champion v{champion['version']} {difference:.2e}"
                    + ("" if difference > 1e-9 else ": the same model (same data and parameters), nothing new"),
                )
            )
        if worst is not None:
            gates.append(
                Gate(
                    "slices",
                    worst[1] >= -settings.slice_tolerance,
                    f"worst slice {settings.slice_column}={worst[0]}: ROC AUC {worst[1]:+.4f} "
                    f"(tolerance {-settings.slice_tolerance:+.4f})",
                )
            )
    elif champion and "error" in champion:
        gates.append(
            Gate(
                "beats_champion",
                True,
                f"champion v{champion['version']} could not be scored: {champion['error']}; floor gates only",
            )
        )
    else:
        gates.append(Gate("beats_champion", True, "no champion yet: the floor gates decide"))

    failed = [g for g in gates if not g.passed]
    verdict: Verdict = "reject" if failed else "promote"
    reasons = [f"{g.name}: {g.detail}" for g in (failed or gates)]
    return DecisionRecord(
        verdict=verdict,
        reasons=reasons,
        gates=gates,
        thresholds=thresholds,
        challenger_metrics=metrics,
        champion_version=champion["version"] if champion else None,
        champion_metrics=champion_metrics,
        auc_gain=gain,
        dry_run=dry_run,
        slices=slices,
    )


def log_decision(settings: Settings, run_id: str, evaluation: Evaluation, decision: DecisionRecord) -> None:
    """Attach the evaluation and the decision record to the challenger's MLflow run."""
    import math

    from include.continuous_training.registry import tracking_client

    client = tracking_client(settings)
    client.log_dict(run_id, dict(evaluation), EVALUATION_ARTIFACT)
    client.log_dict(run_id, decision.as_dict(), DECISION_ARTIFACT)
    for name, value in decision.challenger_metrics.items():
        if value is not None and math.isfinite(value):
            client.log_metric(run_id, f"holdout_{name}", value)
    if decision.champion_metrics:
        for name, value in decision.champion_metrics.items():
            if value is not None and math.isfinite(value):
                client.log_metric(run_id, f"champion_holdout_{name}", value)
    client.set_tag(run_id, "ct.decision", decision.verdict + (" (dry run)" if decision.dry_run else ""))
    client.set_tag(run_id, "ct.decision_summary", decision.summary()[:5000])
