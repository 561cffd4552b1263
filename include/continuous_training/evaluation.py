"""Score challenger and champion on the same holdout, and decide whether the challenger is promoted.

:func:`decide_promotion` is a pure function of the evaluation and the thresholds; it returns a
decision record (inputs, thresholds, intervals, verdict, reasons) that is logged to MLflow, printed
in the task log and attached to the registered version.

Metrics follow ``CT_TASK`` (:data:`~include.continuous_training.config.TASK_METRICS`): binary ROC AUC,
PR AUC, log loss, Brier, accuracy and F1; multiclass macro F1, accuracy, log loss and macro
one-vs-rest ROC AUC; regression RMSE, MAE and R². The gates compare one of them, the *gate metric*
(``CT_GATE_METRIC``; default ``roc_auc`` / ``macro_f1`` / ``rmse``), in its direction (log loss,
Brier, RMSE and MAE: lower is better). Gates, in order:

1. **floor** — the challenger's gate metric is at least ``CT_METRIC_FLOOR`` (at most, for a
   lower-is-better metric); empty: ``CT_ROC_AUC_FLOOR`` when the gate metric is ``roc_auc``, else no
   floor (the only gate for the first model ever, with the next);
2. **not constant** — the challenger's holdout predictions are not all the same;
3. **beats champion** — the gain on the gate metric (challenger - champion, or champion -
   challenger when lower is better) >= ``min_delta`` and the paired-bootstrap 95 % interval of the
   gain does not reach below ``-loss_tolerance``;
4. **differs from champion** — the challenger's holdout predictions are not identical to the
   champion's (the same data and parameters give the same model: promoting it would only churn
   versions);
5. **slices** — no slice of ``slice_column`` (with at least ``min_slice_rows`` rows and the metric
   defined) loses more than ``slice_tolerance`` of the gate metric against the champion.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from include.continuous_training.config import LOWER_IS_BETTER_METRICS, TASK_METRICS, Settings
from include.continuous_training.features import DECISION_ARTIFACT, EVALUATION_ARTIFACT
from include.continuous_training.records import ChallengerScores, ChampionScores, Evaluation, Metrics, TrainingData

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.continuous_training.registry import LoadedModel

log = logging.getLogger(__name__)

Verdict = Literal["promote", "reject"]
METRIC_LABELS = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "log_loss": "log loss",
    "brier": "Brier",
    "accuracy": "accuracy",
    "f1": "F1",
    "macro_f1": "macro F1",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
}


# -- which metric the gates compare -----------------------------------------------------------------
@dataclass(frozen=True)
class GateMetric:
    """The metric the gates compare, which way is better, and the absolute floor (None: no floor)."""

    name: str
    higher_is_better: bool
    floor: float | None
    floor_setting: str

    @property
    def label(self) -> str:
        return METRIC_LABELS.get(self.name, self.name)

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def gain(self, challenger: float, champion: float) -> float:
        """How much better the challenger is (positive: better), in the metric's units."""
        return challenger - champion if self.higher_is_better else champion - challenger

    def meets_floor(self, value: float) -> bool:
        """At or past the floor in the better direction (NaN, an undefined metric, never is)."""
        if self.floor is None:
            return value == value  # not NaN
        return value >= self.floor if self.higher_is_better else value <= self.floor


def gate_metric(settings: Settings, task: str | None = None, name: str | None = None) -> GateMetric:
    """The gate metric of ``settings`` (``CT_GATE_METRIC``, else the task's default) and its floor.

    The floor is ``CT_METRIC_FLOOR``; empty, it is ``CT_ROC_AUC_FLOOR`` for ``roc_auc`` and none otherwise.
    """
    task = task or settings.task
    name = name or settings.gate_metric or TASK_METRICS[task][0]
    if settings.metric_floor is not None:
        floor, setting = settings.metric_floor, "CT_METRIC_FLOOR"
    elif name == "roc_auc":
        floor, setting = settings.roc_auc_floor, "CT_ROC_AUC_FLOOR"
    else:
        floor, setting = None, "CT_METRIC_FLOOR"
    return GateMetric(name, name not in LOWER_IS_BETTER_METRICS, floor, setting)


# -- metrics ----------------------------------------------------------------------------------------
def classification_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> Metrics:
    """Binary: ROC AUC, PR AUC, log loss, Brier, accuracy and F1 at ``threshold`` (``y`` is 0/1).

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


def multiclass_metrics(y: np.ndarray, probabilities: np.ndarray) -> Metrics:
    """Multiclass: macro F1, accuracy, log loss over the model's full class list, macro one-vs-rest ROC AUC.

    ``y`` holds class indices, ``probabilities`` one column per class of the model. ROC AUC averages
    the classes with both members and non-members in ``y`` (None when there is none).
    """
    import numpy as np
    from sklearn import metrics

    y = np.asarray(y)
    probabilities = np.asarray(probabilities, dtype=float)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)  # float32 rows sum to 1 ± 1e-7
    classes = probabilities.shape[1]
    predicted = np.argmax(probabilities, axis=1)
    aucs = [
        float(metrics.roc_auc_score(y == c, probabilities[:, c])) for c in range(classes) if 0 < np.sum(y == c) < len(y)
    ]
    return {
        "macro_f1": float(metrics.f1_score(y, predicted, average="macro", zero_division=0)),
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "log_loss": float(metrics.log_loss(y, probabilities, labels=list(range(classes)))),
        "roc_auc": float(np.mean(aucs)) if aucs else None,
        "classes_present": float(len(np.unique(y))),
        "rows": float(len(y)),
    }


def regression_metrics(y: np.ndarray, predictions: np.ndarray) -> Metrics:
    """Regression: RMSE, MAE and R² (None for fewer than two rows or a constant label)."""
    import numpy as np

    y = np.asarray(y, dtype=float)
    error = np.asarray(predictions, dtype=float) - y
    spread = float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    return {
        "rmse": float(np.sqrt(np.mean(error**2))) if len(y) else None,
        "mae": float(np.mean(np.abs(error))) if len(y) else None,
        "r2": 1.0 - float(np.sum(error**2)) / spread if len(y) > 1 and spread > 0 else None,
        "label_mean": float(y.mean()) if len(y) else None,
        "rows": float(len(y)),
    }


def task_metrics(task: str, y: np.ndarray, output: np.ndarray, threshold: float) -> Metrics:
    """The metrics of ``task`` for a model's output (:meth:`FeatureSpec.predict`) and encoded labels."""
    if task == "multiclass":
        return multiclass_metrics(y, output)
    if task == "regression":
        return regression_metrics(y, output)
    return classification_metrics(y, output, threshold)


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


def weighted_average_precision(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's step definition) for each row of ``weights``, one sort for all."""
    import numpy as np

    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_y = scores[order], y[order]
    w = weights[:, order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_scores)) + 1))
    true_pos = np.cumsum(np.add.reduceat(w * (sorted_y == 1), starts, axis=1), axis=1)
    false_pos = np.cumsum(np.add.reduceat(w * (sorted_y == 0), starts, axis=1), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = true_pos / (true_pos + false_pos)
        recall = true_pos / true_pos[:, -1:]
        steps = np.diff(np.concatenate((np.zeros((len(w), 1)), recall), axis=1), axis=1)
        return np.asarray(np.nansum(steps * np.nan_to_num(precision), axis=1) / (true_pos[:, -1] > 0))


def weighted_metric(
    name: str, task: str, y: np.ndarray, output: np.ndarray, weights: np.ndarray, threshold: float
) -> np.ndarray:
    """Metric ``name`` of ``task`` for each row of ``weights`` (bootstrap multiplicities, shape ``[B, n]``).

    Equals the metric of the resampled rows; NaN where a resample leaves it undefined.
    """
    import numpy as np

    total = weights.sum(axis=1)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.asarray(weights @ values / total)

    def f1(predicted: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        true_pos = weights @ (predicted & actual)
        wrong = weights @ (predicted ^ actual)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(2 * true_pos + wrong > 0, 2 * true_pos / (2 * true_pos + wrong), 0.0), 2 * true_pos + wrong

    with np.errstate(invalid="ignore", divide="ignore"):
        if task == "regression":
            error = output - y
            if name == "rmse":
                return np.sqrt(mean(error**2))
            if name == "mae":
                return mean(np.abs(error))
            centre = (weights @ y / total)[:, None]
            spread = (weights * (y[None, :] - centre) ** 2).sum(axis=1)
            return np.asarray(1.0 - (weights @ error**2) / spread)
        if task == "multiclass":
            predicted = np.argmax(output, axis=1)
            classes = output.shape[1]
            if name == "accuracy":
                return mean((predicted == y).astype(float))
            if name == "log_loss":
                chosen = output[np.arange(len(y)), y] / output.sum(axis=1)
                return mean(-np.log(np.clip(chosen, np.finfo(float).eps, 1.0)))
            if name == "macro_f1":
                scores, present = zip(*(f1(predicted == c, y == c) for c in range(classes)), strict=True)
                stacked, used = np.stack(scores), np.stack(present) > 0
                return np.asarray((stacked * used).sum(axis=0) / used.sum(axis=0))
            aucs = np.stack([weighted_auc((y == c).astype(int), output[:, c], weights) for c in range(classes)])
            return np.asarray(np.nanmean(np.where(np.isfinite(aucs), aucs, np.nan), axis=0))
        scores = np.clip(output.astype(float), 1e-7, 1 - 1e-7)
        if name == "roc_auc":
            return weighted_auc(y, output, weights)
        if name == "pr_auc":
            return weighted_average_precision(y, output, weights)
        if name == "log_loss":
            return mean(-(y * np.log(scores) + (1 - y) * np.log(1 - scores)))
        if name == "brier":
            return mean((scores - y) ** 2)
        predicted = scores >= threshold
        if name == "accuracy":
            return mean((predicted == (y == 1)).astype(float))
        return f1(predicted, y == 1)[0]


def paired_bootstrap_gain(
    metric: GateMetric,
    task: str,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    samples: int,
    seed: int,
    threshold: float = 0.5,
    chunk: int = 100,
) -> dict[str, float]:
    """Mean and 95 % percentile interval of the gain on ``metric`` (positive: the challenger is better,
    whichever way the metric points), both models scored on the same resamples of the holdout."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(y)
    sign = 1.0 if metric.higher_is_better else -1.0
    gains = []
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(size)]).astype(float)
        challenger_values = weighted_metric(metric.name, task, y, challenger, weights, threshold)
        champion_values = weighted_metric(metric.name, task, y, champion, weights, threshold)
        gains.append(sign * (challenger_values - champion_values))
    gain = np.concatenate(gains)
    gain = gain[np.isfinite(gain)]
    return {
        "mean": float(np.mean(gain)),
        "ci_low": float(np.percentile(gain, 2.5)),
        "ci_high": float(np.percentile(gain, 97.5)),
        "samples": float(len(gain)),
    }


def paired_bootstrap_auc_gain(
    y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, samples: int, seed: int, chunk: int = 100
) -> dict[str, float]:
    """Mean and 95 % percentile interval of ROC AUC(challenger) - ROC AUC(champion) on shared resamples."""
    metric = GateMetric("roc_auc", True, None, "CT_METRIC_FLOOR")
    return paired_bootstrap_gain(metric, "binary", y, challenger, champion, samples, seed, chunk=chunk)


def slice_metrics(
    frame: pd.DataFrame,
    y: np.ndarray,
    scores: np.ndarray,
    column: str,
    threshold: float,
    task: str = "binary",
) -> dict[str, Metrics]:
    """:func:`task_metrics` per value of ``column`` (none without a slice column)."""
    import numpy as np

    if not column:
        return {}
    values = frame[column].astype(str).to_numpy()
    return {str(v): task_metrics(task, y[values == v], scores[values == v], threshold) for v in np.unique(values)}


# -- evaluation -------------------------------------------------------------------------------------
def score_spread(task: str, output: np.ndarray) -> float:
    """How much the predictions vary over the holdout (0: a constant model); per class for multiclass."""
    import numpy as np

    if not len(output):
        return 0.0
    return float(np.max(np.std(output, axis=0))) if task == "multiclass" else float(np.std(output))


def compare_on_holdout(
    holdout: pd.DataFrame,
    settings: Settings,
    challenger: LoadedModel,
    champion: LoadedModel | None = None,
    champion_version: str | None = None,
    champion_is_challenger: bool = False,
) -> Evaluation:
    """Score the challenger (and the champion) on ``holdout``: metrics of the task, per slice, and the
    paired bootstrap of the gain on the gate metric. Pure apart from the models (no I/O).

    A champion of another task or other classes cannot be compared: it is reported with an ``error``
    and the floor gates decide.
    """
    import numpy as np

    spec = challenger.spec
    task, threshold = spec.task, settings.decision_threshold
    metric = gate_metric(settings, task)
    y = spec.label_vector(holdout)
    chal_output = spec.predict(challenger.booster, spec.matrix(holdout))
    report = Evaluation(
        holdout_uri="",
        holdout_rows=len(holdout),
        threshold=threshold,
        slice_column=settings.slice_column,
        task=task,
        gate_metric=metric.name,
        challenger=ChallengerScores(
            model_uri=challenger.uri,
            metrics=task_metrics(task, y, chal_output, threshold),
            slices=slice_metrics(holdout, y, chal_output, settings.slice_column, threshold, task),
            score_std=score_spread(task, chal_output),
        ),
        champion=None,
        bootstrap=None,
    )
    if champion is None:
        return report
    version = champion_version or "?"
    if (champion.spec.task, list(champion.spec.classes)) != (task, list(spec.classes)):
        report["champion"] = {
            "version": version,
            "error": f"the champion predicts {champion.spec.task} {list(champion.spec.classes)}, the challenger "
            f"{task} {list(spec.classes)}: not comparable",
        }
        return report
    try:
        champ_output = champion.spec.predict(champion.booster, champion.spec.matrix(holdout))
    except Exception as error:  # a champion that cannot score today's columns is reported, not fatal
        log.warning("champion %s cannot score the holdout: %s", champion.uri, error)
        report["champion"] = {"version": version, "error": f"{type(error).__name__}: {error}"}
        return report
    report["champion"] = ChampionScores(
        version=version,
        model_uri=champion.uri,
        max_score_difference=float(np.max(np.abs(chal_output - champ_output))) if len(y) else 0.0,
        is_challenger=champion_is_challenger,
        metrics=task_metrics(task, y, champ_output, threshold),
        slices=slice_metrics(holdout, y, champ_output, settings.slice_column, threshold, task),
    )
    report["bootstrap"] = paired_bootstrap_gain(
        metric, task, y, chal_output, champ_output, settings.bootstrap_samples, settings.seed, threshold
    )
    return report


def evaluate_challenger(s3: Any, settings: Settings, data: TrainingData, challenger_uri: str) -> Evaluation:
    """Score the challenger and the current champion on the SAME holdout; return a JSON-able report."""
    from include.continuous_training.registry import CHAMPION, load_model, tracking_client, version_by_alias
    from include.continuous_training.storage import read_parquet_uri

    holdout = read_parquet_uri(s3, settings, data["holdout_uri"])
    challenger = load_model(challenger_uri)
    champion_version = version_by_alias(tracking_client(settings), settings.model_name, CHAMPION)
    champion, error = None, None
    if champion_version is not None:
        champion_uri = f"models:/{settings.model_name}@{CHAMPION}"
        try:
            champion = load_model(champion_uri)
        except Exception as failure:  # an unloadable champion is reported, not fatal
            log.warning("champion %s cannot be loaded: %s", champion_uri, failure)
            error = f"{type(failure).__name__}: {failure}"
    report = compare_on_holdout(
        holdout,
        settings,
        challenger,
        champion,
        str(champion_version.version) if champion_version is not None else None,
        # A re-run of the DAG run that registered the champion evaluates the champion against itself.
        champion_is_challenger=champion_version is not None
        and challenger_uri in (champion_version.source, f"models:/{champion_version.model_id}"),
    )
    report["holdout_uri"] = data["holdout_uri"]
    if error is not None and champion_version is not None:
        report["champion"] = {"version": str(champion_version.version), "error": error}
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
    """The verdict, every gate with its numbers, and what was compared.

    ``gain`` is the paired bootstrap of the gain on ``gate_metric`` (positive: the challenger is
    better); ``auc_gain`` is the same record when the gate metric is ROC AUC (what readers of
    binary records have always read), else None.
    """

    verdict: Verdict
    reasons: list[str]
    gates: list[Gate]
    thresholds: dict[str, float | None]
    challenger_metrics: Metrics
    champion_version: str | None
    champion_metrics: Metrics | None
    auc_gain: dict[str, float] | None
    dry_run: bool = False
    slices: dict[str, dict[str, float | None]] = field(default_factory=dict)
    task: str = "binary"
    gate_metric: str = "roc_auc"
    higher_is_better: bool = True
    gain: dict[str, float] | None = None

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


def floor_gate(metric: GateMetric, value: float) -> Gate:
    """The absolute floor on the gate metric (passes, saying so, when no floor is set)."""
    if metric.floor is None:
        detail = f"{metric.label} {value:.4f} ({metric.direction}): no floor set ({metric.floor_setting} empty)"
        return Gate("floor", metric.meets_floor(value), detail)
    detail = f"{metric.label} {value:.4f} vs floor {metric.floor:.4f} ({metric.direction}; {metric.floor_setting})"
    return Gate("floor", metric.meets_floor(value), detail)


def decide_promotion(evaluation: Evaluation, settings: Settings, dry_run: bool = False) -> DecisionRecord:
    """The promotion decision as a record; pure (no I/O), so it is tested on numbers alone."""
    task = evaluation.get("task", "binary")
    metric = gate_metric(settings, task, evaluation.get("gate_metric") or None)
    challenger = evaluation["challenger"]
    metrics = challenger["metrics"]
    value = _defined(metrics.get(metric.name))  # undefined (one class) fails the floor
    thresholds: dict[str, float | None] = {
        "roc_auc_floor": settings.roc_auc_floor,
        "metric_floor": metric.floor,
        "min_delta": settings.min_delta,
        "loss_tolerance": settings.loss_tolerance,
        "slice_tolerance": settings.slice_tolerance,
        "min_slice_rows": float(settings.min_slice_rows),
    }
    gates = [
        floor_gate(metric, value),
        Gate(
            "not_constant",
            challenger["score_std"] > 1e-6,
            f"holdout prediction std {challenger['score_std']:.2e} (must be > 1e-06)",
        ),
    ]
    champion = evaluation["champion"]
    gain = evaluation["bootstrap"]
    slices: dict[str, dict[str, float | None]] = {}
    champion_metrics = None
    if champion and "metrics" in champion and gain:
        champion_metrics = champion["metrics"]
        delta = metric.gain(value, _defined(champion_metrics.get(metric.name)))
        gates.append(
            Gate(
                "beats_champion",
                delta >= settings.min_delta and gain["ci_low"] >= -settings.loss_tolerance,
                f"{metric.label} gain {delta:+.4f} ({metric.direction}; min {settings.min_delta:+.4f}), "
                f"bootstrap 95% CI [{gain['ci_low']:+.4f}, {gain['ci_high']:+.4f}] (lower bound may not be below "
                f"{-settings.loss_tolerance:+.4f})",
            )
        )
        worst: tuple[str, float] | None = None
        for name, chal_slice in challenger["slices"].items():
            champ_slice = champion["slices"].get(name)
            chal_value = chal_slice.get(metric.name)
            champ_value = champ_slice.get(metric.name) if champ_slice else None
            gated = (
                champ_slice is not None
                and _defined(chal_slice["rows"]) >= settings.min_slice_rows
                and ("positive_rate" not in chal_slice or 0 < _defined(chal_slice["positive_rate"]) < 1)
            )
            slice_delta = chal_value - champ_value if chal_value is not None and champ_value is not None else None
            slices[name] = {"rows": chal_slice["rows"], f"{metric.name}_delta": slice_delta, "gated": float(gated)}
            if gated and slice_delta is not None:
                slice_gain = metric.gain(chal_value, champ_value)  # type: ignore[arg-type]
                if worst is None or slice_gain < worst[1]:
                    worst = (name, slice_gain)
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
                    f"worst slice {settings.slice_column}={worst[0]}: {metric.label} gain {worst[1]:+.4f} "
                    f"({metric.direction}; tolerance {-settings.slice_tolerance:+.4f})",
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
        auc_gain=gain if metric.name == "roc_auc" else None,
        dry_run=dry_run,
        slices=slices,
        task=task,
        gate_metric=metric.name,
        higher_is_better=metric.higher_is_better,
        gain=gain,
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
