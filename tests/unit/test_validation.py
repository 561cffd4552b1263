"""The versioned suite against real batches: what passes, what is quarantined, and why."""

from __future__ import annotations

import json
import re

import pytest

from devtools.datasets import to_bytes
from include.continuous_training.config import load_settings
from include.continuous_training.validation import (
    UnreadableBatchError,
    build_suite_from_reference,
    load_suite,
    read_batch,
    validate_batch,
)
from tests.bad_inputs import BAD_INPUTS, BadInput, good_frame

SETTINGS = load_settings({})


def _check(data: bytes, filename: str):
    return validate_batch(read_batch(data, filename, SETTINGS), SETTINGS)


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_a_good_batch_passes_every_expectation(file_format):
    outcome = _check(to_bytes(good_frame(), file_format), f"batch.{file_format}")
    assert outcome.success
    assert not outcome.batch_rejected
    assert outcome.rows == 400
    assert outcome.bad_row_index == []
    assert outcome.suite.name == "transactions"
    assert outcome.suite.version == "2"


def test_validation_writes_no_progress_bar(capfd: pytest.CaptureFixture[str]) -> None:
    """GX draws a tqdm bar per batch by default: in a task log that is noise, line after line."""
    assert _check(to_bytes(good_frame(), "csv"), "batch.csv").success
    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.err + captured.out


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda b: b.case)
def test_every_bad_input_is_rejected_with_a_clear_reason(bad: BadInput):
    data = bad.build(good_frame())
    if bad.unreadable:
        with pytest.raises(UnreadableBatchError, match=re.escape(bad.reason)):
            read_batch(data, bad.filename, SETTINGS)
        return
    outcome = _check(data, bad.filename)
    assert outcome.batch_rejected
    assert bad.reason in outcome.reason
    assert outcome.failures


def test_a_few_bad_rows_are_singled_out_within_the_budget():
    frame = good_frame(rows=1000)
    frame.loc[[3, 500], "country"] = "ZZ"
    frame.loc[7, "amount"] = -1.0
    frame.loc[9, "is_fraud"] = 3
    outcome = _check(to_bytes(frame, "parquet"), "rows.parquet")
    assert not outcome.batch_rejected
    assert outcome.bad_row_index == [3, 7, 9, 500]
    assert {f.expectation for f in outcome.failures} == {
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_between",
    }


def test_duplicate_ids_beyond_the_budget_reject_the_batch():
    frame = good_frame(rows=500)
    frame.loc[0:20, "transaction_id"] = "tx-duplicate"
    outcome = _check(to_bytes(frame, "csv"), "dups.csv")
    assert outcome.batch_rejected
    assert "expect_column_values_to_be_unique" in outcome.reason


def test_unparseable_timestamps_become_row_failures():
    frame = good_frame(rows=1000).astype({"event_time": str})
    frame.loc[42, "event_time"] = "yesterday-ish"
    outcome = _check(to_bytes(frame, "csv"), "times.csv")
    assert outcome.bad_row_index == [42]


def test_budget_zero_rejects_any_bad_row():
    strict = load_settings({"CT_BAD_ROW_BUDGET": "0"})
    frame = good_frame(rows=1000)
    frame.loc[1, "channel"] = "carrier_pigeon"
    outcome = validate_batch(read_batch(to_bytes(frame, "csv"), "x.csv", strict), strict)
    assert outcome.batch_rejected


def test_suite_builder_makes_a_suite_for_a_users_own_table(tmp_path):
    """A user's churn table: the builder's suite accepts the reference and rejects a broken copy."""
    import pandas as pd

    churn = pd.DataFrame(
        {
            "customer": [f"c{i}" for i in range(200)],
            "signup": pd.date_range("2026-01-01", periods=200, freq="h"),
            "spend": [float(i % 50) for i in range(200)],
            "plan": ["basic", "pro"] * 100,
            "churned": [0, 1, 0, 0] * 50,
        }
    )
    env = {
        "CT_LABEL_COLUMN": "churned",
        "CT_ID_COLUMN": "customer",
        "CT_TIMESTAMP_COLUMN": "signup",
        "CT_NUMERIC_COLUMNS": "spend",
        "CT_CATEGORICAL_COLUMNS": "plan",
        "CT_SLICE_COLUMN": "plan",
        "CT_EXPECTATION_SUITE": str(tmp_path / "churn.json"),
    }
    settings = load_settings(env)
    (tmp_path / "churn.json").write_text(json.dumps(build_suite_from_reference(churn, settings, "churn")))
    _, info = load_suite(settings.expectation_suite_path)
    assert info.name == "churn"
    assert info.version == "1"

    assert validate_batch(churn, settings).success
    broken = churn.assign(plan="enterprise")
    outcome = validate_batch(broken, settings)
    assert outcome.batch_rejected
    assert "column `plan`" in outcome.reason


def test_an_invalid_suite_file_fails_loudly(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps({"name": "x", "expectations": [{"type": "expect_column_values_to_be_between", "kwargs": {}}]})
    )
    with pytest.raises(ValueError, match="not valid"):
        load_suite(path)


def test_a_number_in_a_text_column_is_named_and_the_callers_frame_is_untouched():
    """Text columns go to GX as Arrow strings (faster); that must not hide a value of the wrong type."""
    clean = good_frame()
    validate_batch(clean, SETTINGS)
    assert clean["channel"].dtype == object  # the caller's frame is untouched (GX got a converted copy)

    mixed = clean.astype({"channel": object})
    mixed.loc[3, "channel"] = 42
    outcome = validate_batch(mixed, SETTINGS)
    assert mixed.loc[3, "channel"] == 42
    assert not outcome.success
    assert 3 in outcome.bad_row_index or outcome.batch_rejected
    assert "channel" in outcome.reason
