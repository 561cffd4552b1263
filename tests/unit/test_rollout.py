"""The rollout analysis: each check fails on the live-traffic figure it is about, and only on it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from include.continuous_training.config import load_settings
from include.continuous_training.rollout import (
    Stage,
    analyze_stage,
    ks_statistic,
    population_stability_index,
    rollout_stages,
)

SHADOW = Stage("shadow", 100.0)


def traffic(
    n: int = 1000,
    seed: int = 0,
    shift: float = 0.0,
    candidate_errors: int = 0,
    candidate_latency_ms: float = 1.0,
    flip: float = 0.0,
) -> pd.DataFrame:
    """Shadow rows: every request scored by both, the candidate's scores ``shift``ed, labels flipped at ``flip``."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i}" for i in range(n)]
    champion = rng.beta(2, 5, n)
    candidate = np.clip(champion + shift + rng.normal(0, 0.01, n), 0, 1)
    flipped = rng.random(n) < flip
    candidate_label = np.where(flipped, champion < 0.5, candidate >= 0.5).astype(int)
    errors = [("boom" if i < candidate_errors else None) for i in range(n)]
    rows = [
        pd.DataFrame(
            {
                "prediction_id": ids,
                "model_version": "1",
                "variant": "champion",
                "served": True,
                "score": champion,
                "label": (champion >= 0.5).astype(int),
                "latency_ms": rng.uniform(0.5, 1.0, n),
                "error": None,
            }
        ),
        pd.DataFrame(
            {
                "prediction_id": ids,
                "model_version": "2",
                "variant": "candidate",
                "served": False,
                "score": np.where([e is None for e in errors], candidate, np.nan),
                "label": candidate_label,
                "latency_ms": rng.uniform(0.5, 1.0, n) * candidate_latency_ms,
                "error": errors,
            }
        ),
    ]
    return pd.concat(rows, ignore_index=True)


@pytest.fixture
def settings():
    return dataclasses.replace(load_settings({}), rollout_min_requests=500)


def failed(analysis) -> set[str]:
    return {check.name for check in analysis.checks if check.passed is False}


def test_a_candidate_like_the_champion_passes_every_check(settings):
    analysis = analyze_stage(traffic(), SHADOW, settings)

    assert analysis.verdict == "pass", analysis.summary()
    assert analysis.paired_requests == 1000
    assert (analysis.champion.version, analysis.candidate.version) == ("1", "2")
    assert analysis.agreement is not None
    assert analysis.agreement > 0.95
    assert {c.name: c.passed for c in analysis.checks}["realized roc_auc"] is None  # no feedback: not evaluated


def test_errors_fail_the_error_rate_check_only(settings):
    analysis = analyze_stage(traffic(candidate_errors=50), SHADOW, settings)

    assert analysis.verdict == "fail"
    assert failed(analysis) == {"error rate"}
    assert analysis.candidate.errors == 50
    assert "candidate 5.00% (50 of 1000)" in analysis.reason


def test_a_slow_candidate_fails_the_latency_check_only(settings):
    analysis = analyze_stage(traffic(candidate_latency_ms=20.0), SHADOW, settings)

    assert failed(analysis) == {"p99 latency"}
    assert "CT_ROLLOUT_MAX_P99_RATIO" in analysis.reason


def test_diverging_scores_fail_the_distribution_check(settings):
    analysis = analyze_stage(traffic(shift=0.3), SHADOW, settings)

    assert "score distribution" in failed(analysis)
    assert analysis.psi is not None
    assert analysis.psi > settings.rollout_max_psi


def test_disagreeing_labels_fail_the_agreement_check(settings):
    analysis = analyze_stage(traffic(flip=0.5), SHADOW, settings)

    assert "label agreement" in failed(analysis)


def test_too_little_traffic_is_its_own_verdict_with_the_figures(settings):
    analysis = analyze_stage(traffic(n=100), SHADOW, settings)

    assert analysis.verdict == "insufficient"
    assert analysis.reason == (
        "100 candidate-scored requests by the deadline, CT_ROLLOUT_MIN_REQUESTS=500: not enough traffic to judge"
    )


def test_a_stage_nobody_called_is_insufficient_not_an_error(settings):
    analysis = analyze_stage(pd.DataFrame(), SHADOW, settings)  # the inference log had no rows at all

    assert analysis.verdict == "insufficient"
    assert analysis.candidate.requests == 0
    assert "0 candidate-scored requests by the deadline" in analysis.reason


def test_feedback_labels_gate_the_realized_metric(settings):
    rows = traffic(n=1000, seed=3)
    rng = np.random.default_rng(4)
    champion = rows[rows["variant"] == "champion"].reset_index(drop=True)
    truth = (rng.random(1000) < champion["score"]).astype(int)  # the champion's scores are calibrated
    feedback = pd.DataFrame({"prediction_id": champion["prediction_id"], settings.label_column: truth})
    worse = rows.copy()
    candidate = worse["variant"] == "candidate"
    worse.loc[candidate, "score"] = rng.random(int(candidate.sum()))  # noise, but the same distribution shape

    good = analyze_stage(rows, SHADOW, settings, feedback=feedback)
    bad = analyze_stage(worse, SHADOW, settings, feedback=feedback)

    assert {c.name: c.passed for c in good.checks}["realized roc_auc"] is True
    assert "realized roc_auc" in failed(bad)
    assert bad.candidate.realized is not None
    assert bad.candidate.realized["roc_auc"] < 0.6


def test_a_better_candidate_that_scores_differently_passes_when_live_labels_decide(settings):
    """A retrain after the world changed: its scores differ from the champion's (PSI over the limit), but the
    labels that came back show it is better; the distance is reported, not gating, unless switched off."""
    rows = traffic(n=1000, seed=5)
    rng = np.random.default_rng(6)
    champion = rows[rows["variant"] == "champion"].reset_index(drop=True)
    truth = (rng.random(1000) < 0.3).astype(int)
    feedback = pd.DataFrame({"prediction_id": champion["prediction_id"], settings.label_column: truth})
    candidate = rows["variant"] == "candidate"
    # the candidate knows the truth (scores near 0.1 / 0.9), the champion does not: other distribution, better
    rows.loc[candidate, "score"] = np.where(truth == 1, 0.9, 0.1) + rng.normal(0, 0.05, 1000)
    rows.loc[candidate, "label"] = truth

    decided = analyze_stage(rows, SHADOW, settings, feedback=feedback)
    by_name = {c.name: c for c in decided.checks}
    assert decided.verdict == "pass", decided.summary()
    assert by_name["realized roc_auc"].passed is True
    assert by_name["score distribution"].passed is None
    assert "reported, not gating" in by_name["score distribution"].reason
    assert decided.psi is not None
    assert decided.psi > settings.rollout_max_psi

    strict = analyze_stage(rows, SHADOW, dataclasses.replace(settings, rollout_labels_decide=False), feedback=feedback)
    assert strict.verdict == "fail"
    assert "score distribution" in failed(strict)


def test_psi_is_near_zero_for_one_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 5000)

    assert population_stability_index(base, rng.normal(0, 1, 5000)) < 0.02
    assert population_stability_index(base, rng.normal(1, 1, 5000)) > 0.25


def test_ks_statistic_equals_scipys():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 700), rng.normal(0.3, 1.2, 400)

    assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("direct", []),
        ("shadow", ["shadow 100%"]),
        ("canary", ["canary 5%", "canary 25%", "canary 50%"]),
        ("shadow,canary", ["shadow 100%", "canary 5%", "canary 25%", "canary 50%"]),
    ],
)
def test_the_strategy_gives_its_stages_in_order(strategy, expected):
    assert [stage.name for stage in rollout_stages(load_settings({"CT_ROLLOUT": strategy}))] == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CT_ROLLOUT": "blue-green"}, "CT_ROLLOUT 'blue-green': expected one of"),
        ({"CT_CANARY_STEPS": "50,10"}, "CT_CANARY_STEPS '50,10': expected increasing percentages"),
        ({"CT_CANARY_STEPS": "5,x"}, "CT_CANARY_STEPS='5,x': expected comma-separated numbers"),
        ({"CT_ROLLOUT_INSUFFICIENT_TRAFFIC": "ignore"}, "CT_ROLLOUT_INSUFFICIENT_TRAFFIC 'ignore'"),
    ],
)
def test_a_bad_rollout_setting_names_itself(env, message):
    from include.continuous_training.config import SettingsError

    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(env)
