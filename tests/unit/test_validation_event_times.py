"""Event times against the ingest time (validation.py), with a fixed ingest time: deterministic."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from devtools.datasets import BatchSpec, generate_batch, to_bytes
from include.continuous_training.config import load_settings
from include.continuous_training.validation import check_event_times, read_batch, validate_batch

SETTINGS = load_settings({})
INGESTED_AT = datetime(2026, 11, 20, 12, tzinfo=UTC)


def _batch(
    rows: int = 1000, start: datetime = datetime(2026, 11, 19, tzinfo=UTC), times: dict[int, str] | None = None
) -> pd.DataFrame:
    """A good batch of the day before the ingest time, read back the way ingest reads it (tz-naive UTC),
    with the event times of some rows replaced (``times``: row → time)."""
    frame = generate_batch(BatchSpec(rows=rows, seed=5, start=start))
    for row, value in (times or {}).items():
        frame.loc[row, "event_time"] = pd.Timestamp(value, tz="UTC")
    return read_batch(to_bytes(frame, "parquet"), "batch.parquet", SETTINGS)


def test_a_batch_of_the_last_day_passes_and_nothing_is_counted():
    outcome = validate_batch(_batch(), SETTINGS, ingested_at=INGESTED_AT)
    assert outcome.success
    assert outcome.event_times is not None
    assert (outcome.event_times.future_rows, outcome.event_times.old_rows) == (0, 0)
    assert outcome.event_times.latest_allowed == "2026-11-20T13:00:00"  # ingest time + 60 minutes
    assert outcome.event_times.oldest_in_window == "2026-10-21T12:00:00"  # ingest time - 30 days


def test_a_batch_dated_2099_is_rejected_naming_the_rows_the_bound_and_the_setting():
    frame = _batch()
    frame["event_time"] = pd.Timestamp("2099-01-01")

    outcome = validate_batch(frame, SETTINGS, ingested_at=INGESTED_AT)

    assert outcome.batch_rejected
    assert "1000 of 1000 rows have event times after 2026-11-20T13:00:00" in outcome.reason
    assert "CT_MAX_FUTURE_SKEW_MINUTES=60" in outcome.reason
    assert "exceed the bad-row budget" in outcome.reason
    assert outcome.failures[0].expectation == "event_time_not_after_ingest_time"
    assert outcome.as_report()["event_times"]["future_rows"] == 1000


def test_a_few_future_rows_are_bad_rows_within_the_budget_beside_the_suites_own():
    frame = _batch(times={3: "2099-01-01", 7: "2026-11-21T00:00:00", 9: "2026-11-20T12:59:00"})
    frame.loc[[10, 20], "merchant_category"] = "casino"

    outcome = validate_batch(frame, SETTINGS, ingested_at=INGESTED_AT)

    assert not outcome.batch_rejected
    # row 9 is 59 minutes ahead: within the allowed clock skew
    assert outcome.bad_row_index == [3, 7, 10, 20]
    assert "2 of 1000 rows have event times after 2026-11-20T13:00:00" in outcome.reason
    assert "merchant_category" in outcome.reason


def test_future_rows_count_against_the_budget_together_with_the_suites_failures():
    frame = _batch(times=dict.fromkeys(range(8), "2099-01-01"))
    frame.loc[[10, 20, 30], "merchant_category"] = "casino"  # 8 + 3 = 11 > 1 % of 1000

    outcome = validate_batch(frame, SETTINGS, ingested_at=INGESTED_AT)

    assert outcome.batch_rejected
    assert "11 failing row checks" in outcome.reason


def test_the_tolerance_is_a_setting():
    frame = _batch(times={3: "2026-11-20T15:00:00"})  # 3 h after the ingest time
    assert validate_batch(frame, SETTINGS, ingested_at=INGESTED_AT).bad_row_index == [3]
    relaxed = dataclasses.replace(SETTINGS, max_future_skew_minutes=240)
    assert validate_batch(frame, relaxed, ingested_at=INGESTED_AT).success


def test_old_rows_are_counted_not_rejected():
    frame = _batch(start=datetime(2026, 10, 1, tzinfo=UTC), rows=500)  # 50 days before the ingest time
    outcome = validate_batch(frame, SETTINGS, ingested_at=INGESTED_AT)
    assert outcome.success
    assert not outcome.batch_rejected
    assert outcome.event_times is not None
    assert outcome.event_times.old_rows == 500
    assert "500 of 500 rows have event times before 2026-10-21T12:00:00" in outcome.event_times.old_rows_note(500)
    assert "CT_TRAINING_WINDOW_DAYS=30" in outcome.event_times.old_rows_note(500)


def test_the_ingest_time_defaults_to_now_and_may_be_naive_utc():
    recent = _batch(start=datetime.now(UTC) - timedelta(hours=25))
    assert validate_batch(recent, SETTINGS).event_times.future_rows == 0  # type: ignore[union-attr]
    naive = check_event_times(_batch(), SETTINGS, INGESTED_AT.replace(tzinfo=None))
    assert naive == check_event_times(_batch(), SETTINGS, INGESTED_AT)


def test_nulls_and_a_missing_column_are_left_to_the_suite():
    frame = _batch()
    frame.loc[[1, 2], "event_time"] = pd.NaT
    assert check_event_times(frame, SETTINGS, INGESTED_AT).future_rows == 0
    assert check_event_times(frame.drop(columns=["event_time"]), SETTINGS, INGESTED_AT).future_index == []


@pytest.mark.parametrize("minutes", [1e9, 1e15])
def test_a_huge_tolerance_means_no_upper_bound_not_an_overflow(minutes):
    frame = _batch(times={3: "2099-01-01"})
    relaxed = dataclasses.replace(SETTINGS, max_future_skew_minutes=minutes)
    assert check_event_times(frame, relaxed, INGESTED_AT).future_rows == 0
