"""decide_retraining on windows of numbers: N of M, importance weighting, cooldown, active runs, labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from include.continuous_training.config import load_settings
from include.continuous_training.drift import decide_retraining, window_drifted

NOW = datetime(2026, 11, 21, 5, tzinfo=UTC)
TWO_OF_THREE = load_settings({"CT_DRIFT_WINDOWS_REQUIRED": "2", "CT_DRIFT_WINDOWS_CONSIDERED": "3"})


def window(share: float, weighted: float | None = None, auc: float | None = None) -> dict:
    return {
        "status": "measured",
        "drift_share": share,
        "weighted_drift_share": share if weighted is None else weighted,
        "drifted_features": ["amount"] if share else [],
        "realized_performance": None if auc is None else {"roc_auc": auc, "labelled_rows": 500},
    }


def decide(current, history=(), settings=TWO_OF_THREE, last=None, active=False):
    return decide_retraining(current, list(history), settings, NOW, last, active)


def test_one_drifted_window_of_three_is_not_enough():
    record = decide(window(0.5), [window(0.0), window(0.1)])
    assert record.action == "no_drift"
    assert (record.drifted_windows, record.windows_considered) == (1, 3)


def test_two_of_the_last_three_trigger():
    assert decide(window(0.5), [window(0.0), window(0.4)]).action == "retrain"


def test_only_the_last_m_windows_count():
    assert decide(window(0.5), [window(0.0), window(0.0), window(0.9)]).action == "no_drift"


def test_importance_weighting_changes_the_verdict():
    weighted = load_settings({"CT_DRIFT_USE_IMPORTANCE": "true"})
    unimportant = window(0.5, weighted=0.05)  # half the features drifted, but ones the model barely uses
    assert window_drifted(unimportant, load_settings({})) is True
    assert window_drifted(unimportant, weighted) is False


def test_cooldown_and_active_runs_hold_a_trigger():
    settings = load_settings({})
    assert decide(window(0.6), settings=settings, last=NOW - timedelta(hours=3)).action == "no_drift"
    assert decide(window(0.6), settings=settings, last=NOW - timedelta(hours=30)).action == "retrain"
    held = decide(window(0.6), settings=settings, active=True)
    assert held.action == "no_drift"
    assert "is active" in held.reasons[-1]


def test_labels_below_the_floor_force_a_retrain_without_drift():
    record = decide(window(0.0, auc=0.55), settings=load_settings({}))
    assert record.action == "retrain"
    assert "realized ROC AUC 0.5500" in record.reasons[0]


def test_not_enough_data_skips_and_never_counts_as_drift():
    current = {"status": "insufficient", "reason": "12 logged rows in the window, 200 needed"}
    record = decide(current, [window(0.9), window(0.9)])
    assert record.action == "skip"
    assert record.reasons == ["not enough data: 12 logged rows in the window, 200 needed"]
    assert window_drifted(current, TWO_OF_THREE) is False
