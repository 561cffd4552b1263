"""Feature encoding, device selection and parameter handling (no services)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from devtools.datasets import BatchSpec, generate_batch
from include.continuous_training.config import load_settings
from include.continuous_training.devices import cuda_device_count, select_device
from include.continuous_training.features import FeatureSpec
from include.continuous_training.training import fit_booster, run_reason, training_params

SETTINGS = load_settings({})


def test_device_is_cuda_when_a_device_is_reported():
    """The probe is faked: this machine has no GPU. The real probe runs in the next test."""
    assert select_device(lambda: (1, "CUDA driver reports 1 device(s)"), xgboost_has_cuda=True) == (
        "cuda",
        "CUDA driver reports 1 device(s)",
    )


def test_device_falls_back_to_cpu_here():
    count, why = cuda_device_count()
    device, reason = select_device()
    assert count == 0
    assert device == "cpu"
    assert reason == why


def test_device_is_cpu_when_xgboost_lacks_cuda():
    assert select_device(lambda: (4, "x"), xgboost_has_cuda=False)[0] == "cpu"


def test_cuda_visible_devices_can_hide_the_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cuda_device_count() == (0, "CUDA_VISIBLE_DEVICES hides every device")


def test_feature_spec_encodes_categories_stably_and_unknowns_as_missing():
    frame = pd.DataFrame(
        {name: [1.0, 2.0] for name in SETTINGS.numeric_columns}
        | {"merchant_category": ["fuel", "grocery"], "channel": ["pos", "online"], "country": ["US", "XX"]}
    )
    spec = FeatureSpec(
        SETTINGS.numeric_columns,
        {"merchant_category": ["fuel", "grocery"], "channel": ["online", "pos"], "country": ["US"]},
        "is_fraud",
    )
    matrix = spec.matrix(frame)
    assert matrix.dtype == np.float32
    assert matrix.shape == (2, 9)
    assert matrix[:, 6].tolist() == [0.0, 1.0]
    assert matrix[:, 7].tolist() == [1.0, 0.0]
    assert matrix[0, 8] == 0.0
    assert np.isnan(matrix[1, 8])
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


def test_booster_trained_on_encoded_features_learns_the_signal():
    from sklearn.metrics import roc_auc_score

    train = generate_batch(BatchSpec(rows=6000, seed=1))
    valid = generate_batch(BatchSpec(rows=2000, seed=2))
    holdout = generate_batch(BatchSpec(rows=2000, seed=3))
    spec = FeatureSpec.from_frame(train, SETTINGS)
    params, rounds, patience = training_params(SETTINGS, {"num_boost_round": 60}, "cpu")
    booster, history = fit_booster(train, valid, spec, params, rounds, patience)
    assert len(history["validation"]["auc"]) <= 60
    assert roc_auc_score(holdout["is_fraud"], booster.inplace_predict(spec.matrix(holdout))) > 0.75


def test_hyperparameter_overrides_are_typed_and_checked():
    params, rounds, patience = training_params(SETTINGS, {"max_depth": "8", "num_boost_round": 10}, "cuda")
    assert params["max_depth"] == 8
    assert params["device"] == "cuda"
    assert params["tree_method"] == "hist"
    assert (rounds, patience) == (10, SETTINGS.early_stopping_rounds)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        training_params(SETTINGS, {"booster": "dart"}, "cpu")
    with pytest.raises(ValueError, match="max_depth"):
        training_params(SETTINGS, {"max_depth": "deep"}, "cpu")


def test_run_reason_prefers_the_param_then_the_trigger():
    assert run_reason("new features", "manual", None) == "new features"
    assert (
        run_reason("", "manual", "s3://b/reports/drift/x.html") == "drift detected (report s3://b/reports/drift/x.html)"
    )
    assert run_reason("", "asset_triggered", None) == "new curated data"


def test_the_commit_recorded_with_a_model_comes_from_settings_else_git():
    from include.continuous_training.training import git_commit

    assert git_commit(load_settings({"CT_GIT_COMMIT": "0123abc"})) == "0123abc"
    from_git = git_commit(load_settings({}))
    assert from_git == "unknown" or len(from_git) == 40  # this checkout's HEAD where git can say
