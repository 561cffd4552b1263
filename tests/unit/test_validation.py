"""The versioned suite against real batches: what passes, what is quarantined, and why."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from devtools.datasets import BatchSpec, generate_batch, to_bytes
from include.continuous_training.config import load_settings
from include.continuous_training.validation import (
    GUARD,
    UnreadableBatchError,
    build_suite_from_reference,
    distribution_guards,
    load_suite,
    read_batch,
    validate_batch,
)
from tests.bad_inputs import BAD_INPUTS, BadInput, good_frame

SETTINGS = load_settings({})
QUARANTINE_ON_GUARDS = load_settings({"CT_DISTRIBUTION_GUARD_ACTION": "quarantine"})


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
    assert outcome.suite.version == "3"
    assert outcome.flags == []
    assert outcome.guards == "evaluated"


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
    # With guards set to quarantine, a hard failure still leads the reason (guards never mask it).
    strict = validate_batch(read_batch(data, bad.filename, QUARANTINE_ON_GUARDS), QUARANTINE_ON_GUARDS)
    assert strict.batch_rejected
    assert strict.reason == outcome.reason


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
    assert outcome.batch_rejected  # a type check is batch-level: the whole object is quarantined
    assert "column `channel`: 1 rows failed (e.g. 42)" in outcome.reason


# -- distribution guards ----------------------------------------------------------------------------
def _bundled_guard(column: str) -> dict:
    suite = json.loads(SETTINGS.expectation_suite_path.read_text())
    [guard] = [e for e in suite["expectations"] if e["meta"].get("guard") == GUARD and e["kwargs"]["column"] == column]
    return guard


def test_a_constant_numeric_feature_is_curated_but_flagged_by_default():
    """`amount` = 42.0 on every row (an upstream default-value bug) passes every row-level check."""
    outcome = _check(to_bytes(good_frame().assign(amount=42.0), "parquet"), "constant.parquet")

    assert not outcome.batch_rejected
    assert outcome.bad_row_index == []
    assert outcome.failures == []
    assert not outcome.success
    [flag] = outcome.flags
    assert (flag.column, flag.check, flag.statistic, flag.observed) == ("amount", "spread", "stdev", 0.0)
    assert flag.expected == {"min": _bundled_guard("amount")["kwargs"]["min_value"]}
    assert flag.reference == pytest.approx(79, rel=0.05)  # the reference's standard deviation
    assert "flagged by distribution guards: column `amount`: stdev 0 (expected >= " in outcome.reason
    report = outcome.as_report()["distribution_guards"]
    assert report["status"] == "evaluated"
    assert report["fired"] == [flag.as_dict()]
    json.dumps(report)  # goes into report.json, the done entry and the Asset event as it is


def test_a_constant_numeric_feature_is_quarantined_when_the_setting_says_so():
    data = to_bytes(good_frame().assign(amount=42.0), "parquet")
    outcome = validate_batch(read_batch(data, "constant.parquet", QUARANTINE_ON_GUARDS), QUARANTINE_ON_GUARDS)

    assert outcome.batch_rejected
    assert outcome.bad_row_index == []
    assert outcome.reason.startswith(
        "distribution guards fired (CT_DISTRIBUTION_GUARD_ACTION=quarantine): column `amount`: stdev 0"
    )


def test_a_categorical_feature_collapsed_to_one_value_is_flagged():
    outcome = _check(to_bytes(good_frame().assign(channel="pos"), "csv"), "one_channel.csv")

    assert not outcome.batch_rejected
    [flag] = outcome.flags
    assert (flag.column, flag.check, flag.statistic) == ("channel", "collapse", "distinct_values")
    assert (flag.observed, flag.expected, flag.reference) == (1.0, {"min": 2.0}, 3.0)
    assert "column `channel`: distinct_values 1 (expected >= 2, reference 3)" in outcome.reason


def test_a_spread_that_only_narrows_does_not_fire():
    """The guard is for a collapse, not for drift: a quarter of the amounts set to 42.0 still passes."""
    frame = good_frame()
    frame.loc[frame.index[::4], "amount"] = 42.0
    frame["hour_of_day"] = frame["hour_of_day"].clip(10, 20)  # a busy-hours-only export
    assert _check(to_bytes(frame, "parquet"), "narrow.parquet").flags == []


def test_a_small_batch_is_not_guarded_and_the_report_says_so():
    """20 rows say little about a distribution: under CT_DISTRIBUTION_GUARD_MIN_ROWS the guards are skipped."""
    data = to_bytes(good_frame(rows=20).assign(amount=42.0, channel="pos"), "csv")
    outcome = _check(data, "small.csv")
    assert outcome.success
    assert outcome.guards == "not evaluated: 20 rows, under CT_DISTRIBUTION_GUARD_MIN_ROWS=100"
    assert outcome.as_report()["distribution_guards"] == {"status": outcome.guards, "fired": []}

    lower = load_settings({"CT_DISTRIBUTION_GUARD_MIN_ROWS": "20"})
    flagged = validate_batch(read_batch(data, "small.csv", lower), lower)
    assert {(f.column, f.check) for f in flagged.flags} == {("amount", "spread"), ("channel", "collapse")}


@pytest.mark.parametrize(
    "spec",
    [
        BatchSpec(rows=100, seed=1),
        BatchSpec(rows=100, seed=2, covariate_drift=1.0),
        BatchSpec(rows=137, seed=3, concept_drift=1.0, fraud_rate=0.01),
        BatchSpec(rows=400, seed=11, hours=1.0),
        BatchSpec(rows=6000, seed=11),  # the demo's first batch
        BatchSpec(rows=30000, seed=12, covariate_drift=1.0, concept_drift=1.0),  # the demo's drifted batch
    ],
    ids=lambda spec: f"{spec.rows}rows-seed{spec.seed}",
)
def test_valid_batches_do_not_trip_the_guards(spec: BatchSpec):
    outcome = _check(to_bytes(generate_batch(spec), "parquet"), "valid.parquet")
    assert outcome.success, outcome.reason


def test_the_bundled_guards_hold_for_a_thousand_reference_like_batches_of_the_minimum_size():
    """The calibration claim, checked without GX: the statistics the guards compute (pandas' stdev,
    distinct count) on 1,000 seeded 100-row batches, normal and drifted, stay inside every bound."""
    suite = json.loads(SETTINGS.expectation_suite_path.read_text())
    guards = [e for e in suite["expectations"] if e["meta"].get("guard") == GUARD]
    rows = SETTINGS.distribution_guard_min_rows
    for drift in (0.0, 1.0):
        pool = generate_batch(BatchSpec(rows=50_000, seed=5, covariate_drift=drift))
        for index in range(1000):
            batch = pool.sample(n=rows, random_state=index)
            for guard in guards:
                column, bound = guard["kwargs"]["column"], guard["kwargs"]["min_value"]
                if guard["type"] == "expect_column_stdev_to_be_between":
                    assert batch[column].std() >= bound, (drift, index, column)
                else:
                    assert batch[column].nunique() >= bound, (drift, index, column)


def test_the_bundled_suite_carries_the_guards_built_from_its_documented_reference():
    """transactions.json's guards are what ``distribution_guards`` makes of the reference its notes name."""
    suite = json.loads(SETTINGS.expectation_suite_path.read_text())
    bundled = [e for e in suite["expectations"] if e["meta"].get("guard") == GUARD]
    assert "BatchSpec(rows=20000, seed=0)" in suite["meta"]["notes"]
    assert bundled == distribution_guards(generate_batch(BatchSpec(rows=20000, seed=0)), SETTINGS)
    amount = _bundled_guard("amount")
    assert (amount["kwargs"]["min_value"], amount["meta"]["reference"]["stdev"]) == (9.979, 78.98)  # README
    assert {(e["kwargs"]["column"], e["meta"]["check"]) for e in bundled} == {
        *((c, "spread") for c in SETTINGS.numeric_columns),
        *((c, "collapse") for c in SETTINGS.categorical_columns),
    }


def _accounts(rows: int, null_every: int | None, seed: int = 0) -> pd.DataFrame:
    """A user's table whose ``referrer`` column is legitimately empty now and then."""
    import numpy as np

    rng = np.random.default_rng(seed)
    referrer = pd.Series(rng.choice(["search", "friend", "ad"], size=rows), dtype=object)
    if null_every:
        referrer[::null_every] = None
    return pd.DataFrame(
        {
            "account": [f"a{seed}-{i}" for i in range(rows)],
            "opened": pd.date_range("2026-01-01", periods=rows, freq="min"),
            "balance": rng.gamma(2.0, 300.0, size=rows).round(2),
            "referrer": referrer,
            "closed": rng.integers(0, 2, size=rows),
        }
    )


ACCOUNTS_ENV = {
    "CT_LABEL_COLUMN": "closed",
    "CT_ID_COLUMN": "account",
    "CT_TIMESTAMP_COLUMN": "opened",
    "CT_NUMERIC_COLUMNS": "balance",
    "CT_CATEGORICAL_COLUMNS": "referrer",
    "CT_SLICE_COLUMN": "referrer",
}


def test_a_null_rate_far_above_the_references_is_flagged(tmp_path):
    settings = load_settings({**ACCOUNTS_ENV, "CT_EXPECTATION_SUITE": str(tmp_path / "accounts.json")})
    reference = _accounts(2000, null_every=25)  # 4 % of referrers empty
    suite = build_suite_from_reference(reference, settings, "accounts")
    (tmp_path / "accounts.json").write_text(json.dumps(suite))
    on_referrer = [e for e in suite["expectations"] if e["kwargs"].get("column") == "referrer"]
    [null_guard] = [e for e in on_referrer if e["type"] == "expect_column_values_to_not_be_null"]
    assert null_guard["meta"]["guard"] == GUARD  # no hard not-null: nulls are normal in this column
    allowed = round(1 - null_guard["kwargs"]["mostly"], 6)
    # the larger of twice the reference's 4 % and 4 % plus four binomial standard deviations at 100 rows
    assert allowed == pytest.approx(max(0.08, 0.04 + 4 * (0.04 * 0.96 / 100) ** 0.5), abs=1e-4)

    assert validate_batch(reference, settings).success
    assert validate_batch(_accounts(500, null_every=17, seed=1), settings).success  # 6 %: noise, not a jump
    jumped = _accounts(500, null_every=3, seed=2)  # a third of the referrers lost upstream
    outcome = validate_batch(jumped, settings)
    assert not outcome.batch_rejected
    assert outcome.bad_row_index == []  # the null rows are not "bad rows": nulls are valid here
    [flag] = outcome.flags
    assert (flag.column, flag.check, flag.statistic) == ("referrer", "null_rate", "null_share")
    assert flag.observed == pytest.approx(167 / 500)
    assert flag.expected == {"max": allowed}
    assert flag.reference == 0.04

    strict = load_settings(
        {
            **ACCOUNTS_ENV,
            "CT_EXPECTATION_SUITE": str(tmp_path / "accounts.json"),
            "CT_DISTRIBUTION_GUARD_ACTION": "quarantine",
        }
    )
    assert validate_batch(jumped, strict).batch_rejected


def test_a_column_dominated_by_one_value_gets_no_guard_it_would_trip_itself(tmp_path):
    """99 % "search" referrers and balances that are 0 in 98 % of the accounts: a 100-row batch drawn
    from that reference is often all "search" or all 0, so neither column gets a spread or collapse guard."""
    import numpy as np

    settings = load_settings({**ACCOUNTS_ENV, "CT_EXPECTATION_SUITE": str(tmp_path / "accounts.json")})
    reference = _accounts(5000, null_every=None)
    rng = np.random.default_rng(3)
    reference["referrer"] = np.where(rng.random(5000) < 0.99, "search", "friend")
    reference["balance"] = np.where(rng.random(5000) < 0.98, 0.0, reference["balance"])
    suite = build_suite_from_reference(reference, settings, "accounts")
    assert [e for e in suite["expectations"] if e["meta"].get("guard")] == []
    (tmp_path / "accounts.json").write_text(json.dumps(suite))
    quiet_day = reference.head(100).assign(referrer="search", balance=0.0)
    assert validate_batch(quiet_day, settings).success

    balanced = _accounts(5000, null_every=None)  # the same table without the dominance: both guarded
    checks = {e["meta"].get("check") for e in build_suite_from_reference(balanced, settings, "a")["expectations"]}
    assert {"spread", "collapse"} <= checks


def test_a_suite_built_from_a_categorical_parquet_file_accepts_that_file(tmp_path):
    """scikit-learn's bundled iris table with its text columns as pandas ``category`` (what a Parquet
    file written from categoricals reads back as) and as Arrow dictionaries."""
    import io

    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    table = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    table = table.assign(
        flower_id=[f"iris-{i:03d}" for i in range(len(table))],
        measured_at=pd.date_range("2026-05-01", periods=len(table), freq="h"),
        species=pd.Categorical.from_codes(table["target"], categories=list(iris.target_names)),
        petal_size=pd.cut(table["petal_length"], bins=3, labels=["small", "medium", "large"]),
        is_virginica=(table["target"] == 2).astype(int),
    ).drop(columns="target")
    settings = load_settings(
        {
            "CT_LABEL_COLUMN": "is_virginica",
            "CT_ID_COLUMN": "flower_id",
            "CT_TIMESTAMP_COLUMN": "measured_at",
            "CT_NUMERIC_COLUMNS": "sepal_length,sepal_width,petal_length,petal_width",
            "CT_CATEGORICAL_COLUMNS": "species,petal_size",
            "CT_SLICE_COLUMN": "species",
            "CT_EXPECTATION_SUITE": str(tmp_path / "iris.json"),
        }
    )
    data = to_bytes(table, "parquet")
    reference = read_batch(data, "iris.parquet", settings)
    assert isinstance(reference["species"].dtype, pd.CategoricalDtype)
    suite = build_suite_from_reference(reference, settings, "iris")
    (tmp_path / "iris.json").write_text(json.dumps(suite))
    assert any(e["meta"].get("check") == "collapse" for e in suite["expectations"])

    outcome = validate_batch(reference, settings)
    assert outcome.success, outcome.reason
    assert outcome.guards == "evaluated"  # 150 rows: the guards ran on it too
    arrow = pd.read_parquet(io.BytesIO(data), dtype_backend="pyarrow")
    as_dictionaries = reference.assign(species=arrow["species"], petal_size=arrow["petal_size"])
    assert str(as_dictionaries["species"].dtype).startswith("dictionary<values=string")
    assert validate_batch(as_dictionaries, settings).success
    assert isinstance(reference["species"].dtype, pd.CategoricalDtype)  # the caller's frame is untouched
    broken = reference.assign(species=pd.Categorical(["setosa"] * 149 + ["rosa"]))
    assert "column `species`" in validate_batch(broken, settings).reason


def test_a_configured_column_the_suite_does_not_know_is_a_configuration_error_naming_the_variable():
    from include.continuous_training.errors import ConfigurationError
    from include.continuous_training.validation import SettingNotInSuite, check_settings_against_suite

    check_settings_against_suite(SETTINGS)  # the bundled suite knows every default column
    check_settings_against_suite(load_settings({"CT_ID_COLUMN": "", "CT_TIMESTAMP_COLUMN": ""}))  # derived: not needed
    wrong = load_settings({"CT_NUMERIC_COLUMNS": "amount,loyalty_points"})
    with pytest.raises(SettingNotInSuite, match=r"CT_NUMERIC_COLUMNS names 'loyalty_points'.*version 3") as caught:
        check_settings_against_suite(wrong)
    assert isinstance(caught.value, ConfigurationError)
    with pytest.raises(SettingNotInSuite, match=r"CT_ID_COLUMN names 'row_key'"):
        check_settings_against_suite(load_settings({"CT_ID_COLUMN": "row_key"}))


def test_boolean_features_become_0_1_floats_from_parquet_and_csv():
    frame = good_frame()
    settings = load_settings({"CT_NUMERIC_COLUMNS": "amount,is_weekend"})
    flags = (frame["hour_of_day"] % 7 == 0).astype("boolean")
    flags[3] = pd.NA
    frame = frame.assign(is_weekend=flags)
    for file_format in ("parquet", "csv"):
        read = read_batch(to_bytes(frame, file_format), f"batch.{file_format}", settings)
        assert read["is_weekend"].dtype == "float64", file_format
        assert read["is_weekend"].isna().tolist() == flags.isna().tolist()
        assert read["is_weekend"].dropna().tolist() == flags.dropna().astype(float).tolist()


def test_a_parquet_file_with_an_arrow_dictionary_column_written_from_pandas_is_readable():
    import pyarrow as pa

    frame = good_frame()
    frame["channel"] = frame["channel"].astype(pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string())))
    read = read_batch(to_bytes(frame, "parquet"), "batch.parquet", SETTINGS)  # was UnreadableBatchError
    assert read["channel"].astype(str).tolist() == good_frame()["channel"].astype(str).tolist()
    assert validate_batch(read, SETTINGS).success
