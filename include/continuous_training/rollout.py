"""Progressive delivery after the smoke test: the stages, and the analysis that passes or fails each.

A rollout (``CT_ROLLOUT``) is a list of stages: ``shadow`` (the candidate scores a sample of
requests off the response path), then canary steps (``CT_CANARY_STEPS``: the candidate answers that
share of requests, sticky per entity), then promotion. Each stage waits for
``CT_ROLLOUT_MIN_REQUESTS`` candidate-scored requests or ``CT_ROLLOUT_MAX_MINUTES``, whichever comes
first, then :func:`analyze_stage` compares the candidate with the champion on the *same* live traffic
(the inference-log rows the endpoint wrote during the stage, every replica's):

- error rate (the candidate may exceed the champion's by ``CT_ROLLOUT_MAX_ERROR_RATE_INCREASE``);
- p99 scoring latency (at most ``CT_ROLLOUT_MAX_P99_RATIO`` times the champion's, or the champion's
  plus ``CT_ROLLOUT_P99_SLACK_MS``, whichever is larger: sub-millisecond p99s are noise);
- the score distribution (PSI at most ``CT_ROLLOUT_MAX_PSI``; the two-sample KS statistic is reported);
- label agreement on paired requests (shadow rows share their ``prediction_id`` with the champion's;
  classifiers, at least ``CT_ROLLOUT_MIN_AGREEMENT``);
- the realized gate metric where feedback labels arrived (the candidate may not be worse than the
  champion's by more than ``CT_LOSS_TOLERANCE``).

Too few candidate-scored requests by the deadline is its own verdict, ``insufficient``: what happens
then is ``CT_ROLLOUT_INSUFFICIENT_TRAFFIC`` (``rollback`` by default; ``proceed`` is recorded as such).
The record (:class:`StageAnalysis`) carries every figure and threshold; it goes to the log, to MLflow
and, on a failure, to the alert.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from include.continuous_training.config import Settings
from include.continuous_training.errors import ContinuousTrainingError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Inference-log columns the endpoint writes for progressive delivery (serving/app.py).
VARIANT = "variant"  # "champion" | "candidate"
SERVED = "served"  # did this score answer the caller
LATENCY_MS = "latency_ms"  # this variant's scoring time for the request
ERROR = "error"  # null, or why this variant could not score the request
CHAMPION_VARIANT, CANDIDATE_VARIANT = "champion", "candidate"

StageMode = Literal["shadow", "canary"]
Verdict = Literal["pass", "fail", "insufficient"]
PSI_BINS = 10


@dataclass(frozen=True)
class Stage:
    """One rollout stage: its mode and the share of requests the candidate scores (shadow) or answers (canary)."""

    mode: StageMode
    percent: float

    @property
    def name(self) -> str:
        return f"{self.mode} {self.percent:g}%"

    @property
    def slug(self) -> str:
        """The stage in task ids: ``shadow``, ``canary_5``, ``canary_2_5`` (no dots)."""
        return self.mode if self.mode == "shadow" else f"canary_{self.percent:g}".replace(".", "_")


def rollout_stages(settings: Settings) -> list[Stage]:
    """The stages ``CT_ROLLOUT`` asks for, in order (``direct``: none)."""
    stages: list[Stage] = []
    modes = settings.rollout.split(",")
    if "shadow" in modes:
        stages.append(Stage("shadow", settings.shadow_percent))
    if "canary" in modes:
        stages.extend(Stage("canary", percent) for percent in settings.canary_steps if percent < 100)
    return stages


@dataclass(frozen=True)
class VariantFigures:
    """What one variant did during the stage."""

    version: str | None
    requests: int
    errors: int
    error_rate: float | None
    p99_latency_ms: float | None
    mean_score: float | None
    realized: dict[str, Any] | None = None


@dataclass(frozen=True)
class Check:
    """One comparison: its figure, its threshold, and whether it passed (None: not evaluated, and why)."""

    name: str
    value: float | None
    threshold: float | None
    passed: bool | None
    reason: str


@dataclass(frozen=True)
class StageAnalysis:
    """The analysis record of one stage: every figure and threshold, the verdict and why."""

    stage: str
    champion: VariantFigures
    candidate: VariantFigures
    paired_requests: int
    psi: float | None
    ks: float | None
    agreement: float | None
    checks: list[Check] = field(default_factory=list)
    verdict: Verdict = "pass"
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"{self.stage}: {self.verdict.upper()} ({self.reason})"]
        for check in self.checks:
            status = {True: "ok  ", False: "FAIL", None: "n/a "}[check.passed]
            lines.append(f"  {status} {check.name}: {check.reason}")
        return "\n".join(lines)


# -- distances -------------------------------------------------------------------------------------
def population_stability_index(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI of ``actual`` against ``expected``: bins at ``expected``'s quantiles, empty bins smoothed.

    0 for the same distribution; about 0.1 is a moderate shift, above 0.25 a large one (the usual
    reading in credit scoring, where the index comes from).
    """
    import numpy as np

    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant champion score: any spread in the candidate is all the shift there is
        return 0.0 if np.all(actual == expected[0]) else float("inf")
    inner = edges[1:-1]
    e = np.bincount(np.searchsorted(inner, expected, side="right"), minlength=len(inner) + 1) / len(expected)
    a = np.bincount(np.searchsorted(inner, actual, side="right"), minlength=len(inner) + 1) / len(actual)
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(first: np.ndarray, second: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    import numpy as np

    first, second = np.sort(first), np.sort(second)
    points = np.concatenate([first, second])
    cdf1 = np.searchsorted(first, points, side="right") / len(first)
    cdf2 = np.searchsorted(second, points, side="right") / len(second)
    return float(np.max(np.abs(cdf1 - cdf2)))


# -- the analysis ----------------------------------------------------------------------------------
def _figures(rows: pd.DataFrame, realized: dict[str, Any] | None) -> VariantFigures:
    import numpy as np

    errors = int(rows[ERROR].notna().sum()) if ERROR in rows else 0
    scored = rows[rows[ERROR].isna()] if ERROR in rows else rows
    latency = scored[LATENCY_MS].dropna().to_numpy(dtype=float) if LATENCY_MS in scored else np.array([])
    scores = scored["score"].dropna().to_numpy(dtype=float) if "score" in scored else np.array([])
    versions = rows["model_version"].dropna().astype(str).unique() if "model_version" in rows else []
    return VariantFigures(
        version=str(versions[0]) if len(versions) == 1 else (",".join(sorted(versions)) or None),
        requests=len(rows),
        errors=errors,
        error_rate=errors / len(rows) if len(rows) else None,
        p99_latency_ms=float(np.quantile(latency, 0.99)) if len(latency) else None,
        mean_score=float(scores.mean()) if len(scores) else None,
        realized=realized,
    )


def analyze_stage(
    rows: pd.DataFrame,
    stage: Stage,
    settings: Settings,
    feedback: pd.DataFrame | None = None,
    spec: Any = None,
    deadline_passed: bool = True,
) -> StageAnalysis:
    """Compare the candidate with the champion on the inference-log ``rows`` of one stage.

    ``rows``: every row the endpoint logged during the stage (both variants; a shadow request has a
    row per variant with the same ``prediction_id``). ``feedback``: late labels (``prediction_id``
    and the label column), if any. ``spec``: the champion's feature spec, for the labels' encoding.
    ``deadline_passed``: whether the stage's wait ended on its deadline rather than on traffic.
    """
    import numpy as np
    import pandas as pd

    from include.continuous_training.drift import realized_performance
    from include.continuous_training.evaluation import gate_metric

    if rows.empty:  # nothing logged in the stage (no caller at all): the columns the figures read, no rows
        columns = ["prediction_id", "model_version", VARIANT, SERVED, "score", "label", LATENCY_MS, ERROR]
        rows = pd.DataFrame(columns=columns)
    variant = rows.get(VARIANT, None)
    champion_rows = rows[variant == CHAMPION_VARIANT] if variant is not None else rows
    candidate_rows = rows[variant == CANDIDATE_VARIANT] if variant is not None else rows.iloc[0:0]
    labels = feedback if feedback is not None and not feedback.empty else None
    champion_realized = realized_performance(champion_rows, labels, settings, spec) if labels is not None else None
    candidate_realized = realized_performance(candidate_rows, labels, settings, spec) if labels is not None else None
    champion = _figures(champion_rows, champion_realized)
    candidate = _figures(candidate_rows, candidate_realized)

    ok_champion = champion_rows[champion_rows[ERROR].isna()] if ERROR in champion_rows else champion_rows
    ok_candidate = candidate_rows[candidate_rows[ERROR].isna()] if ERROR in candidate_rows else candidate_rows
    champion_scores = ok_champion["score"].dropna().to_numpy(dtype=float)
    candidate_scores = ok_candidate["score"].dropna().to_numpy(dtype=float)
    psi = ks = None
    if len(champion_scores) and len(candidate_scores):
        psi = population_stability_index(champion_scores, candidate_scores)
        ks = ks_statistic(champion_scores, candidate_scores)
    paired = ok_champion.merge(ok_candidate, on="prediction_id", suffixes=("_champion", "_candidate"))
    agreement = None
    if len(paired) and "label_champion" in paired and paired["label_champion"].notna().any():
        agreement = float(np.mean(paired["label_champion"].astype(str) == paired["label_candidate"].astype(str)))

    checks: list[Check] = []
    if candidate.requests < settings.rollout_min_requests:
        waited = "by the deadline" if deadline_passed else "so far"
        reason = (
            f"{candidate.requests} candidate-scored requests {waited}, CT_ROLLOUT_MIN_REQUESTS="
            f"{settings.rollout_min_requests}: not enough traffic to judge"
        )
        checks.append(Check("traffic", float(candidate.requests), float(settings.rollout_min_requests), False, reason))
        return StageAnalysis(
            stage.name, champion, candidate, len(paired), psi, ks, agreement, checks, "insufficient", reason
        )
    checks.append(
        Check(
            "traffic",
            float(candidate.requests),
            float(settings.rollout_min_requests),
            True,
            f"{candidate.requests} candidate-scored requests, at least "
            f"CT_ROLLOUT_MIN_REQUESTS={settings.rollout_min_requests}",
        )
    )

    champion_errors = champion.error_rate or 0.0
    limit = champion_errors + settings.rollout_max_error_rate_increase
    rate = candidate.error_rate or 0.0
    checks.append(
        Check(
            "error rate",
            rate,
            limit,
            rate <= limit,
            f"candidate {rate:.2%} ({candidate.errors} of {candidate.requests}) vs champion {champion_errors:.2%}; "
            f"at most +{settings.rollout_max_error_rate_increase:.2%} (CT_ROLLOUT_MAX_ERROR_RATE_INCREASE)",
        )
    )

    if champion.p99_latency_ms is not None and candidate.p99_latency_ms is not None:
        bound = max(
            champion.p99_latency_ms * settings.rollout_max_p99_ratio,
            champion.p99_latency_ms + settings.rollout_p99_slack_ms,
        )
        checks.append(
            Check(
                "p99 latency",
                candidate.p99_latency_ms,
                bound,
                candidate.p99_latency_ms <= bound,
                f"candidate {candidate.p99_latency_ms:.2f} ms vs champion {champion.p99_latency_ms:.2f} ms; at most "
                f"{bound:.2f} ms (x{settings.rollout_max_p99_ratio:g} CT_ROLLOUT_MAX_P99_RATIO, or "
                f"+{settings.rollout_p99_slack_ms:g} ms CT_ROLLOUT_P99_SLACK_MS)",
            )
        )
    else:
        checks.append(Check("p99 latency", None, None, None, "no latencies logged for one of the variants"))

    if psi is not None:
        checks.append(
            Check(
                "score distribution",
                psi,
                settings.rollout_max_psi,
                psi <= settings.rollout_max_psi,
                f"PSI {psi:.3f} of the candidate's scores against the champion's (KS {ks:.3f}); at most "
                f"{settings.rollout_max_psi:g} (CT_ROLLOUT_MAX_PSI)",
            )
        )
    else:
        checks.append(Check("score distribution", None, None, None, "no scores from one of the variants"))

    if agreement is not None and settings.task != "regression":
        checks.append(
            Check(
                "label agreement",
                agreement,
                settings.rollout_min_agreement,
                agreement >= settings.rollout_min_agreement,
                f"{agreement:.1%} of {len(paired)} paired requests got the same label; at least "
                f"{settings.rollout_min_agreement:.0%} (CT_ROLLOUT_MIN_AGREEMENT)",
            )
        )
    else:
        why = "regression: no labels to agree on" if settings.task == "regression" else "no paired requests (canary)"
        checks.append(Check("label agreement", None, None, None, why))

    metric = gate_metric(settings)
    ours = (candidate_realized or {}).get(metric.name)
    theirs = (champion_realized or {}).get(metric.name)
    if ours is not None and theirs is not None:
        gain = metric.gain(float(ours), float(theirs))
        checks.append(
            Check(
                f"realized {metric.name}",
                gain,
                -settings.loss_tolerance,
                gain >= -settings.loss_tolerance,
                f"candidate {float(ours):.4f} vs champion {float(theirs):.4f} on labelled live rows "
                f"({metric.direction}); "
                f"gain {gain:+.4f}, at least -{settings.loss_tolerance:g} (CT_LOSS_TOLERANCE)",
            )
        )
    else:
        checks.append(Check(f"realized {metric.name}", None, None, None, "too few feedback labels for both variants"))
    if settings.rollout_labels_decide and checks[-1].passed:
        # The distances are proxies for "does it behave like the model it replaces"; measured quality on
        # the same live traffic answers the real question: a retrain after a change in the world *should*
        # score differently, and failing it on PSI alone would keep the worse model serving.
        checks = [_reported_only(check, checks[-1]) if check.name in PROXY_CHECKS else check for check in checks]

    failed = [check for check in checks if check.passed is False]
    if failed:
        return StageAnalysis(
            stage.name,
            champion,
            candidate,
            len(paired),
            psi,
            ks,
            agreement,
            checks,
            "fail",
            "; ".join(f"{c.name}: {c.reason}" for c in failed),
        )
    passed = ", ".join(c.name for c in checks if c.passed)
    return StageAnalysis(
        stage.name, champion, candidate, len(paired), psi, ks, agreement, checks, "pass", f"passed: {passed}"
    )


PROXY_CHECKS = ("score distribution", "label agreement")


def _reported_only(check: Check, realized: Check) -> Check:
    """A proxy check that failed while the realized metric passed: reported, not gating."""
    if check.passed is not False:
        return check
    return dataclasses.replace(
        check,
        passed=None,
        reason=f"{check.reason}; reported, not gating: the {realized.name} on live labels passed and decides "
        "(CT_ROLLOUT_LABELS_DECIDE)",
    )


# -- the stage's traffic ----------------------------------------------------------------------------
def read_stage_rows(client: Any, settings: Settings, since: float, until: float | None = None) -> pd.DataFrame:
    """Inference-log rows logged from ``since`` (a Unix time) to ``until`` (default now), every replica's.

    Rows written before the endpoint logged variants are the champion's, answering the caller.
    """
    from datetime import UTC, datetime

    from include.continuous_training.drift import read_inference_window

    start = datetime.fromtimestamp(since, UTC)
    end = datetime.fromtimestamp(until, UTC) if until is not None else datetime.now(UTC)
    rows = read_inference_window(client, settings, start, end, champion_only=False)
    if rows.empty:
        return rows
    if VARIANT not in rows:
        rows[VARIANT] = CHAMPION_VARIANT
    rows[VARIANT] = rows[VARIANT].fillna(CHAMPION_VARIANT)
    if SERVED not in rows:
        rows[SERVED] = True
    return rows


def count_variant_requests(client: Any, settings: Settings, since: float) -> dict[str, int]:
    """Requests each variant scored since ``since``: what a stage's wait watches (the triggerer calls it)."""
    rows = read_stage_rows(client, settings, since)
    if rows.empty:
        return {}
    return {str(name): int(count) for name, count in rows[VARIANT].value_counts().items()}


# -- the task behind each analyze_<stage> --------------------------------------------------------
class RolloutFailed(ContinuousTrainingError):
    """A rollout stage failed its analysis, or saw too little traffic (a retry would judge the same rows)."""


def judge_stage(
    settings: Settings, version: str, stage: Stage, since: float, deadline_passed: bool, run_id: str
) -> dict[str, Any]:
    """Analyze one stage of ``version``'s rollout on the traffic since ``since``; record it; raise on a failure.

    The record goes to the log and to the version's MLflow run (``rollout/<stage>.json``). A ``fail``,
    or ``insufficient`` traffic with ``CT_ROLLOUT_INSUFFICIENT_TRAFFIC=rollback``, raises
    :class:`RolloutFailed` with the reason; ``insufficient`` with ``proceed`` is logged as a warning and
    the rollout goes on.
    """
    import logging

    from include.continuous_training.drift import read_feedback
    from include.continuous_training.registry import load_model, tracking_client
    from include.continuous_training.storage import s3_client_from_connection

    log = logging.getLogger(__name__)
    s3 = s3_client_from_connection(settings.aws_conn_id)
    rows = read_stage_rows(s3, settings, since)
    spec = load_model(f"models:/{settings.model_name}/{version}").spec
    analysis = analyze_stage(rows, stage, settings, read_feedback(s3, settings), spec, deadline_passed)
    record = {**analysis.as_dict(), "version": version, "dag_run_id": run_id, "since": since}
    print(analysis.summary())
    client = tracking_client(settings)
    run = client.get_model_version(settings.model_name, version).run_id
    if run:
        client.log_dict(run, record, f"rollout/{stage.slug}.json")
    if analysis.verdict == "fail":
        raise RolloutFailed(f"rollout of version {version} failed at {stage.name}: {analysis.reason}")
    if analysis.verdict == "insufficient":
        if settings.rollout_insufficient_traffic == "rollback":
            raise RolloutFailed(
                f"rollout of version {version} stopped at {stage.name}: {analysis.reason} "
                "(CT_ROLLOUT_INSUFFICIENT_TRAFFIC=rollback)"
            )
        log.warning(
            "rollout of version %s PROCEEDS past %s on too little traffic "
            "(CT_ROLLOUT_INSUFFICIENT_TRAFFIC=proceed): %s",
            version,
            stage.name,
            analysis.reason,
        )
    return record
