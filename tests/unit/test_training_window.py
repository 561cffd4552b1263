"""The training window (training.py): where it is anchored, which batches it holds, and the shrink check."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import pandas as pd
import pytest

from include.continuous_training.config import SettingsError, load_settings
from include.continuous_training.training import (
    TrainingDataError,
    batch_in_window,
    check_window_shrink,
    training_window,
)

SETTINGS = load_settings({})
RUN = datetime(2026, 12, 1, tzinfo=UTC)


def _times(*values: str) -> pd.DataFrame:
    return pd.DataFrame({"event_time": pd.to_datetime(list(values))})


NOVEMBER = _times("2026-11-01T00:00", "2026-11-10T00:00", "2026-11-20T06:00")
POISONED = _times("2099-01-01", "2099-01-01")


def test_the_window_ends_at_the_newest_event_at_or_before_the_runs_time():
    window = training_window([NOVEMBER], "event_time", 30, RUN)
    assert window.end == pd.Timestamp("2026-11-20T06:00")
    assert window.start == pd.Timestamp("2026-10-21T06:00")
    assert window.not_after == pd.Timestamp("2026-12-01")  # tz-aware run time, as naive UTC


def test_a_batch_dated_2099_does_not_move_the_window():
    assert training_window([NOVEMBER, POISONED], "event_time", 30, RUN) == training_window(
        [NOVEMBER], "event_time", 30, RUN
    )


def test_events_after_the_runs_time_are_out_even_when_plausible():
    window = training_window([NOVEMBER], "event_time", 30, datetime(2026, 11, 15, tzinfo=UTC))
    assert window.end == pd.Timestamp("2026-11-10T00:00")
    assert batch_in_window(NOVEMBER, "event_time", window) == {
        "rows_in_window": 2,
        "rows_before_start": 0,
        "rows_after_end": 1,
        "in_window": True,
    }


def test_each_batch_out_of_the_window_says_why():
    window = training_window([NOVEMBER], "event_time", 5, RUN)  # 2026-11-15T06:00 .. 2026-11-20T06:00
    old = _times("2026-11-01", "2026-11-02")
    straddling = _times("2026-11-01", "2099-01-01")
    assert batch_in_window(POISONED, "event_time", window)["out_reason"] == "all events after the window end"
    assert batch_in_window(old, "event_time", window)["out_reason"] == "no events in window: all before its start"
    assert batch_in_window(straddling, "event_time", window)["out_reason"] == (
        "no events in window: 1 before its start, 1 after its end"
    )
    assert batch_in_window(old.head(0), "event_time", window)["out_reason"] == "no rows"
    assert "out_reason" not in batch_in_window(NOVEMBER, "event_time", window)


def test_no_event_before_the_runs_time_is_a_data_error_with_the_figures():
    with pytest.raises(TrainingDataError, match=r"no curated event at or before 2026-12-01T00:00:00.*all 2 curated"):
        training_window([POISONED], "event_time", 30, RUN)


def _previous(rows: int, days: int = 30) -> dict:
    return {
        "rows": {"train": rows - 2 * (rows // 5), "validation": rows // 5, "holdout": rows // 5},
        "window": {"days": days},
    }


WINDOW = training_window([NOVEMBER], "event_time", 30, RUN)


def test_a_window_that_lost_most_rows_shrank_with_the_figures():
    check = check_window_shrink(4000, WINDOW, _previous(16000), "s3://b/training/x/manifest.json", SETTINGS)
    assert check.verdict == "shrank"
    assert "holds 4,000 rows, the previous training had 16,000 (25%)" in check.reason
    assert "CT_WINDOW_SHRINK_TOLERANCE=0.5" in check.reason
    assert "s3://b/training/x/manifest.json" in check.reason


def test_a_window_that_kept_enough_or_grew_is_ok():
    assert check_window_shrink(8000, WINDOW, _previous(16000), "u", SETTINGS).verdict == "ok"
    assert check_window_shrink(20000, WINDOW, _previous(16000), "u", SETTINGS).verdict == "ok"
    stricter = dataclasses.replace(SETTINGS, window_shrink_tolerance=0.9)
    assert check_window_shrink(12000, WINDOW, _previous(16000), "u", stricter).verdict == "shrank"


def test_nothing_to_compare_with_a_first_training_another_window_length_or_the_check_off():
    assert check_window_shrink(10, WINDOW, None, None, SETTINGS).verdict == "not compared"
    other = check_window_shrink(10, WINDOW, _previous(16000, days=90), "u", SETTINGS)
    assert (other.verdict, other.reason) == ("not compared", "the previous training used a 90-day window, this one 30")
    off = dataclasses.replace(SETTINGS, window_shrink_tolerance=0.0)
    assert check_window_shrink(10, WINDOW, _previous(16000), "u", off).verdict == "not compared"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CT_WINDOW_SHRINK_ACTION": "ignore"}, "CT_WINDOW_SHRINK_ACTION 'ignore': expected one of ('fail', 'warn')"),
        ({"CT_WINDOW_SHRINK_TOLERANCE": "1.5"}, "CT_WINDOW_SHRINK_TOLERANCE must be in [0, 1]"),
        ({"CT_MAX_FUTURE_SKEW_MINUTES": "-5"}, "CT_MAX_FUTURE_SKEW_MINUTES must be >= 0"),
    ],
)
def test_the_time_settings_are_checked(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings(env)
