"""Metrics, the paired bootstrap and the promotion gates, on numbers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from include.continuous_training.config import load_settings
from include.continuous_training.evaluation import (
    classification_metrics,
    decide_promotion,
    paired_bootstrap_auc_gain,
    weighted_auc,
)

SETTINGS = load_settings({"CT_MIN_DELTA": "0.0", "CT_LOSS_TOLERANCE": "0.005", "CT_SLICE_TOLERANCE": "0.02"})


def _metrics(auc: float, rows: float = 1000, positive_rate: float = 0.1) -> dict[str, float]:
    return {"roc_auc": auc, "rows": rows, "positive_rate": positive_rate, "pr_auc": 0.5, "log_loss": 0.3}


def _evaluation(chal: float, champ: float | None, ci=(0.0, 0.02), slices=None, std=0.1):
    slices = slices or {"pos": (chal, champ or 0.0)}
    evaluation = {
        "challenger": {
            "metrics": _metrics(chal),
            "slices": {k: _metrics(v[0]) for k, v in slices.items()},
            "score_std": std,
        },
        "champion": None,
        "bootstrap": None,
    }
    if champ is not None:
        evaluation["champion"] = {
            "version": "3",
            "metrics": _metrics(champ),
            "slices": {k: _metrics(v[1]) for k, v in slices.items()},
        }
        evaluation["bootstrap"] = {"mean": chal - champ, "ci_low": ci[0], "ci_high": ci[1], "samples": 1000.0}
    return evaluation


def test_first_model_needs_only_the_floor():
    record = decide_promotion(_evaluation(0.71, None), SETTINGS)
    assert record.verdict == "promote"
    assert record.champion_version is None
    assert any("no champion yet" in r for r in record.reasons)


def test_first_model_below_the_floor_is_rejected():
    record = decide_promotion(_evaluation(0.69, None), SETTINGS)
    assert record.verdict == "reject"
    assert record.reasons == ["floor: ROC AUC 0.6900 vs floor 0.7000 (higher is better; CT_ROC_AUC_FLOOR)"]


def test_constant_predictions_are_rejected_even_above_the_floor():
    record = decide_promotion(_evaluation(0.8, None, std=0.0), SETTINGS)
    assert record.verdict == "reject"
    assert record.reasons[0].startswith("not_constant")


def test_a_clear_improvement_is_promoted():
    record = decide_promotion(_evaluation(0.86, 0.84, ci=(0.01, 0.03)), SETTINGS)
    assert record.verdict == "promote"
    assert record.promoted
    assert record.champion_version == "3"


def test_a_tie_passes_when_the_interval_allows_no_real_loss():
    """min_delta 0: equal AUC promotes only if the bootstrap bound stays within the tolerance."""
    assert decide_promotion(_evaluation(0.85, 0.85, ci=(-0.004, 0.004)), SETTINGS).verdict == "promote"
    record = decide_promotion(_evaluation(0.85, 0.85, ci=(-0.006, 0.006)), SETTINGS)
    assert record.verdict == "reject"
    assert "beats_champion" in record.reasons[0]


def test_a_challenger_identical_to_the_champion_is_not_promoted():
    """Same data and parameters give the same booster: a tie that only churns versions."""
    same = _evaluation(0.85, 0.85, ci=(0.0, 0.0))
    same["champion"]["max_score_difference"] = 0.0
    record = decide_promotion(same, SETTINGS)
    assert record.verdict == "reject"
    assert record.reasons == [
        "differs_from_champion: largest holdout score difference to champion v3 0.00e+00: "
        "the same model (same data and parameters), nothing new"
    ]
    different = _evaluation(0.85, 0.85, ci=(0.0, 0.0))
    different["champion"]["max_score_difference"] = 1e-4
    assert decide_promotion(different, SETTINGS).verdict == "promote"
    rerun = _evaluation(0.85, 0.85, ci=(0.0, 0.0))  # the DAG run that made the champion, run again
    rerun["champion"].update(max_score_difference=0.0, is_challenger=True)
    assert decide_promotion(rerun, SETTINGS).verdict == "promote"


def test_min_delta_is_enforced():
    strict = load_settings({"CT_MIN_DELTA": "0.01"})
    assert decide_promotion(_evaluation(0.855, 0.85, ci=(0.001, 0.01)), strict).verdict == "reject"
    assert decide_promotion(_evaluation(0.861, 0.85, ci=(0.001, 0.02)), strict).verdict == "promote"


def test_a_worse_challenger_is_rejected():
    record = decide_promotion(_evaluation(0.80, 0.85, ci=(-0.07, -0.03)), SETTINGS)
    assert record.verdict == "reject"
    assert "-0.0500" in record.reasons[0]


def test_a_slice_regression_is_rejected_even_when_overall_improves():
    slices = {"pos": (0.9, 0.88), "online": (0.88, 0.86), "atm": (0.70, 0.80)}
    record = decide_promotion(_evaluation(0.87, 0.85, ci=(0.005, 0.03), slices=slices), SETTINGS)
    assert record.verdict == "reject"
    assert record.reasons == [
        "slices: worst slice channel=atm: ROC AUC gain -0.1000 (higher is better; tolerance -0.0200)"
    ]


def test_small_slices_are_reported_but_not_gated():
    evaluation = _evaluation(0.87, 0.85, ci=(0.005, 0.03), slices={"pos": (0.9, 0.88)})
    evaluation["challenger"]["slices"]["rare"] = _metrics(0.5, rows=20)
    evaluation["champion"]["slices"]["rare"] = _metrics(0.9, rows=20)
    record = decide_promotion(evaluation, SETTINGS)
    assert record.verdict == "promote"
    assert record.slices["rare"]["gated"] == 0.0


def test_dry_run_records_the_verdict_but_promotes_nothing():
    record = decide_promotion(_evaluation(0.86, 0.84, ci=(0.01, 0.03)), SETTINGS, dry_run=True)
    assert record.verdict == "promote"
    assert not record.promoted
    assert "dry run" in record.summary()


def test_an_unscorable_champion_falls_back_to_the_floor():
    evaluation = _evaluation(0.75, None)
    evaluation["champion"] = {"version": "2", "error": "KeyError: 'old_feature'"}
    record = decide_promotion(evaluation, SETTINGS)
    assert record.verdict == "promote"
    assert any("could not be scored" in g.detail for g in record.gates)


def test_weighted_auc_matches_sklearn_with_ties_and_resamples():
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.2).astype(int)
    scores = np.round(rng.random(3000) * 0.6 + 0.3 * y, 2)  # many ties
    assert weighted_auc(y, scores, np.ones((1, 3000)))[0] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    index = rng.integers(0, 3000, 3000)
    weights = np.bincount(index, minlength=3000)[None, :].astype(float)
    assert weighted_auc(y, scores, weights)[0] == pytest.approx(roc_auc_score(y[index], scores[index]), abs=1e-12)


def test_paired_bootstrap_separates_better_from_equal():
    rng = np.random.default_rng(1)
    y = (rng.random(5000) < 0.1).astype(int)
    noise = rng.random(5000)
    strong = noise * 0.5 + 0.4 * y
    weak = noise * 0.5 + 0.2 * y
    better = paired_bootstrap_auc_gain(y, strong, weak, samples=400, seed=3)
    same = paired_bootstrap_auc_gain(y, strong, strong, samples=400, seed=3)
    assert better["ci_low"] > 0
    assert same == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "samples": 400.0}
    assert paired_bootstrap_auc_gain(y, strong, weak, samples=400, seed=3) == better  # seeded


def test_classification_metrics_at_the_threshold():
    y = np.array([0, 0, 1, 1])
    metrics = classification_metrics(y, np.array([0.1, 0.6, 0.4, 0.9]), threshold=0.5)
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["f1"] == pytest.approx(0.5)
    assert metrics["rows"] == 4


def test_a_decision_record_survives_the_trip_through_xcom_json():
    import json

    from include.continuous_training.evaluation import DecisionRecord

    record = decide_promotion(_evaluation(0.86, 0.84, ci=(0.01, 0.03)), SETTINGS)
    again = DecisionRecord.from_dict(json.loads(json.dumps(record.as_dict())))
    assert again == record
    assert again.gates[0].name == "floor"
    assert again.promoted


def test_a_one_class_slice_leaves_the_evaluation_and_decision_strict_json():
    """XCom refuses NaN: a small table whose holdout has a slice with one class must still pass through."""
    import json

    y = np.array([0, 1, 0, 1, 0, 0, 0, 0])
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.4, 0.2, 0.1])
    one_class = classification_metrics(y[4:], scores[4:], 0.5)
    assert one_class["roc_auc"] is None
    assert one_class["pr_auc"] is None
    json.dumps(one_class, allow_nan=False)

    evaluation = _evaluation(0.86, 0.84, ci=(0.01, 0.03), slices={"pos": (0.9, 0.85), "tiny": (0.5, 0.5)})
    evaluation["challenger"]["slices"]["tiny"].update(roc_auc=None, pr_auc=None, positive_rate=0.0)
    evaluation["champion"]["slices"]["tiny"].update(roc_auc=None, pr_auc=None, positive_rate=0.0)
    record = decide_promotion(evaluation, SETTINGS)
    assert record.verdict == "promote"
    assert record.slices["tiny"]["roc_auc_delta"] is None
    json.dumps(record.as_dict(), allow_nan=False)
