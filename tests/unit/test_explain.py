"""`/explain`'s contributions and the model card's importance on a real multiclass booster (Palmer
penguins, from the `palmerpenguins` package): they add up to the model's margin, per class."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xgboost as xgb

from include.continuous_training.config import load_settings
from include.continuous_training.features import FeatureSpec
from include.continuous_training.model_card import shap_importance
from include.continuous_training.registry import LoadedModel
from include.continuous_training.serving.app import contributions


@pytest.fixture(scope="module")
def penguins_model():
    from palmerpenguins import load_penguins

    frame = load_penguins().dropna(subset=["species"]).reset_index(drop=True)
    settings = dataclasses.replace(
        load_settings({}),
        task="multiclass",
        label_column="species",
        numeric_columns=("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"),
        categorical_columns=("island", "sex"),
        slice_column="island",
    )
    spec = FeatureSpec.from_frame(frame, settings)
    dtrain = xgb.DMatrix(spec.matrix(frame), label=spec.label_vector(frame), missing=np.nan)
    params = {"objective": "multi:softprob", "num_class": len(spec.classes), "max_depth": 3, "seed": 1}
    booster = xgb.train(params, dtrain, num_boost_round=20)
    return LoadedModel(booster=booster, spec=spec, uri="models:/penguins/1"), frame


def test_per_class_contributions_add_up_to_each_class_margin(penguins_model):
    model, frame = penguins_model
    matrix = model.spec.matrix(frame.head(1))
    explained = contributions(model, matrix)
    classes = [str(c) for c in model.spec.classes]
    assert set(explained["contributions"]) == set(classes) == set(explained["base_value"])
    margins = model.booster.predict(xgb.DMatrix(matrix, missing=np.nan), output_margin=True)[0]
    for position, name in enumerate(classes):
        total = explained["base_value"][name] + sum(explained["contributions"][name].values())
        assert total == pytest.approx(float(margins[position]), abs=1e-4)
        assert set(explained["contributions"][name]) == set(model.spec.feature_names)


def test_the_cards_importance_ranks_every_feature(penguins_model):
    model, frame = penguins_model
    ranked = shap_importance(model, frame)
    assert [name for name, _ in ranked] != []
    assert {name for name, _ in ranked} == set(model.spec.feature_names)
    values = [value for _, value in ranked]
    assert values == sorted(values, reverse=True)
    assert values[0] > 0
