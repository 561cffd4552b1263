from __future__ import annotations

import dataclasses

import pytest

from include.continuous_training.config import DEFAULT_SUITE_PATH, Settings, load_settings


def test_defaults_are_loopback_friendly_and_complete():
    settings = load_settings({})
    assert settings.s3_bucket == "ct-data"
    assert settings.landing_prefix == "landing/"
    assert settings.mlflow_tracking_uri.startswith("http://127.0.0.1:")
    assert settings.expectation_suite_path == DEFAULT_SUITE_PATH
    assert DEFAULT_SUITE_PATH.exists()
    assert settings.feature_columns[: len(settings.numeric_columns)] == settings.numeric_columns


def test_environment_overrides_every_kind_of_value(tmp_path):
    settings = load_settings(
        {
            "CT_S3_BUCKET": "my-bucket",
            "CT_LANDING_PREFIX": "/raw/incoming",
            "CT_CATEGORICAL_COLUMNS": "region, plan",
            "CT_SLICE_COLUMN": "plan",
            "CT_NUMERIC_COLUMNS": "spend,tenure",
            "CT_LABEL_COLUMN": "churned",
            "CT_BAD_ROW_BUDGET": "0.05",
            "CT_SEED": "7",
            "CT_EXPECTATION_SUITE": str(tmp_path / "suite.json"),
        }
    )
    assert settings.s3_bucket == "my-bucket"
    assert settings.landing_prefix == "raw/incoming/"
    assert settings.categorical_columns == ("region", "plan")
    assert settings.feature_columns == ("spend", "tenure", "region", "plan")
    assert settings.label_column == "churned"
    assert settings.bad_row_budget == 0.05
    assert settings.seed == 7
    assert settings.expectation_suite_path == tmp_path / "suite.json"


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_settings({}).s3_bucket = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CT_LANDING_PREFIX": "../etc"}, "invalid S3 prefix"),
        ({"CT_S3_BUCKET": "ab"}, "at least 3 characters"),
        ({"CT_BAD_ROW_BUDGET": "1.5"}, "CT_BAD_ROW_BUDGET"),
        ({"CT_NUMERIC_COLUMNS": "amount,channel"}, "both categorical and numeric"),
        ({"CT_NUMERIC_COLUMNS": "amount,is_fraud"}, "cannot be features"),
        ({"CT_SLICE_COLUMN": "amount"}, "must be one of the categorical columns"),
        ({"CT_DEPLOYMENT_TARGET": "kubernetes"}, "CT_DEPLOYMENT_TARGET"),
        ({"CT_HOLDOUT_FRACTION": "0.5", "CT_VALIDATION_FRACTION": "0.45"}, "leave rows to train on"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(env, message):
    with pytest.raises(ValueError, match=message):
        load_settings(env)


def test_s3_uri():
    assert Settings(s3_bucket="bkt").s3_uri("curated/x.parquet") == "s3://bkt/curated/x.parquet"
