"""A null at the endpoint: a missing value where the suite lets values be missing, refused elsewhere."""

from __future__ import annotations

import json
import math

from devtools.public_tables import load_table
from include.continuous_training.config import load_settings
from include.continuous_training.features import FeatureSpec
from include.continuous_training.serving.app import encode_records
from include.continuous_training.serving.model_store import ServedModel
from include.continuous_training.validation import build_suite_from_reference, nullable_features

PENGUIN_ENV = {
    "CT_TASK": "multiclass",
    "CT_LABEL_COLUMN": "species",
    "CT_ID_COLUMN": "",
    "CT_TIMESTAMP_COLUMN": "",
    "CT_NUMERIC_COLUMNS": "bill_length_mm,body_mass_g,year",
    "CT_CATEGORICAL_COLUMNS": "island,sex",
    "CT_SLICE_COLUMN": "island",
}


def penguin_settings(tmp_path):
    settings = load_settings(PENGUIN_ENV)
    suite = build_suite_from_reference(load_table("penguins"), settings, name="penguins")
    (tmp_path / "penguins.json").write_text(json.dumps(suite))
    return load_settings({**PENGUIN_ENV, "CT_EXPECTATION_SUITE": str(tmp_path / "penguins.json")})


def served(spec: FeatureSpec) -> ServedModel:
    lookups = {name: {value: i for i, value in enumerate(values)} for name, values in spec.categories.items()}
    return ServedModel("1", None, spec, None, 0.0, lookups)  # type: ignore[arg-type]  # no booster: encoding only


def test_the_features_a_suite_lets_be_missing_are_nullable(tmp_path):
    settings = penguin_settings(tmp_path)
    # The penguins have missing measurements and sexes; every penguin has an island and a year.
    assert nullable_features(settings) == ("bill_length_mm", "body_mass_g", "sex")
    assert nullable_features(load_settings({})) == ()  # the bundled suite requires every feature


def test_a_null_is_scored_as_missing_where_nullable_and_refused_elsewhere(tmp_path):
    settings = penguin_settings(tmp_path)
    frame = load_table("penguins").dropna()
    spec = FeatureSpec.from_frame(frame, settings, nullable=nullable_features(settings))
    model = served(spec)
    record = {"bill_length_mm": None, "body_mass_g": 4000.0, "year": 2008, "island": "Dream", "sex": None}
    matrix, errors = encode_records([record], model)
    assert errors == []
    assert math.isnan(matrix[0, 0])
    assert math.isnan(matrix[0, spec.feature_names.index("sex")])
    assert matrix[0, spec.feature_names.index("island")] == spec.categories["island"].index("Dream")
    _, errors = encode_records([{**record, "island": None}], model)
    assert errors == [{"loc": [0, "island"], "msg": "expected a string, got NoneType", "type": "type_error"}]
    _, errors = encode_records([{k: v for k, v in record.items() if k != "sex"}], model)
    assert errors == [{"loc": [0, "sex"], "msg": "field required", "type": "missing"}]  # absent is not null


def test_a_spec_stored_before_nullable_existed_refuses_nulls_as_before():
    old = {"numeric": ["amount"], "categories": {"channel": ["web"]}, "label": "is_fraud"}
    spec = FeatureSpec.from_dict(old)
    assert spec.nullable == ()
    _, errors = encode_records([{"amount": None, "channel": "web"}], served(spec))
    assert [e["loc"] for e in errors] == [[0, "amount"]]
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
