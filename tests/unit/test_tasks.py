"""Binary, multiclass and regression models end to end through the library, on public tables.

scikit-learn's bundled ``load_wine`` (multiclass, labels made strings), ``load_breast_cancer`` (binary,
labels "malignant" / "benign") and ``load_diabetes`` (regression): the spec encodes the label, the
booster trains with the task's objective, the holdout metrics are the task's, and the gates compare
the task's gate metric in its direction.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets, metrics

from include.continuous_training.config import SettingsError, load_settings
from include.continuous_training.deployment import offline_predictions, prediction_difference
from include.continuous_training.drift import decide_retraining, realized_performance
from include.continuous_training.errors import ConfigurationError
from include.continuous_training.evaluation import (
    DecisionRecord,
    compare_on_holdout,
    decide_promotion,
    gate_metric,
    task_metrics,
    weighted_metric,
)
from include.continuous_training.features import FeatureSpec, LabelDoesNotFitTask
from include.continuous_training.registry import LoadedModel
from include.continuous_training.serving.app import predictions_of
from include.continuous_training.training import TrainingDataError, check_splits, fit_booster, training_params


def _settings(frame: pd.DataFrame, label: str, task: str, categorical: tuple[str, ...] = (), **env: str):
    base = load_settings({"CT_TASK": task, "CT_BOOTSTRAP_SAMPLES": "300", **env})
    numeric = tuple(c for c in frame.columns if c != label and c not in categorical)
    return dataclasses.replace(
        base,
        label_column=label,
        numeric_columns=numeric,
        categorical_columns=categorical,
        slice_column=categorical[0] if categorical else "",
        min_slice_rows=20,
    )


def _splits(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n = len(shuffled)
    return shuffled.iloc[: int(n * 0.6)], shuffled.iloc[int(n * 0.6) : int(n * 0.8)], shuffled.iloc[int(n * 0.8) :]


def _train(settings, train, valid, **overrides) -> LoadedModel:
    spec = FeatureSpec.from_frame(train, settings)
    params, rounds, patience = training_params(
        settings, {"num_boost_round": 120, **overrides}, "cpu", len(spec.classes) or None
    )
    booster, _ = fit_booster(train, valid, spec, params, rounds, patience)
    return LoadedModel(booster=booster, spec=spec, uri="memory://challenger")


def _shuffled_label(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """The same rows with the label permuted: a model of it has learnt nothing."""
    return frame.assign(**{label: frame[label].sample(frac=1.0, random_state=7).to_numpy()})


def _number(value: float | None) -> float:
    assert value is not None
    return value


def _wine() -> pd.DataFrame:
    bunch = datasets.load_wine(as_frame=True)
    names = np.array(["barbera", "barolo", "grignolino"])  # cultivars, as strings
    return bunch.frame.rename(columns=lambda c: c.replace("/", "_")).assign(target=names[bunch.target])


def _breast_cancer() -> pd.DataFrame:
    bunch = datasets.load_breast_cancer(as_frame=True)
    return bunch.frame.assign(target=np.array(["malignant", "benign"])[bunch.target])


def _diabetes() -> pd.DataFrame:
    frame = datasets.load_diabetes(as_frame=True).frame
    return frame.assign(sex=np.where(frame["sex"] > 0, "b", "a"))


# -- multiclass ----------------------------------------------------------------------------------------
def test_wine_multiclass_with_string_labels_trains_and_is_gated_on_macro_f1():
    frame = _wine()
    settings = _settings(frame, "target", "multiclass")
    train, valid, holdout = _splits(frame)
    model = _train(settings, train, valid)
    assert model.spec.task == "multiclass"
    assert model.spec.classes == ("barbera", "barolo", "grignolino")
    assert model.booster.attr("best_iteration") is not None
    assert json.loads(model.booster.save_config())["learner"]["objective"]["name"] == "multi:softprob"

    evaluation = compare_on_holdout(holdout, settings, model)
    chal: dict[str, Any] = dict(evaluation["challenger"]["metrics"])
    assert chal["macro_f1"] > 0.85
    assert chal["accuracy"] > 0.85
    assert 0.9 < chal["roc_auc"] <= 1.0
    truth = holdout["target"].map({"barbera": 0, "barolo": 1, "grignolino": 2}).to_numpy()
    output = model.spec.predict(model.booster, model.spec.matrix(holdout))
    assert output.shape == (len(holdout), 3)
    assert chal["log_loss"] == pytest.approx(metrics.log_loss(truth, output, labels=[0, 1, 2]), rel=1e-5)

    first = decide_promotion(evaluation, settings)
    assert first.verdict == "promote"
    assert (first.task, first.gate_metric, first.higher_is_better) == ("multiclass", "macro_f1", True)
    assert first.gates[0].detail.startswith("macro F1 ")
    assert "higher is better" in first.gates[0].detail
    json.dumps(first.as_dict(), allow_nan=False)

    # A copy of the champion: zero gain on every resample, and it is not promoted over it.
    copy = LoadedModel(booster=model.booster, spec=model.spec, uri="memory://copy")
    same = compare_on_holdout(holdout, settings, copy, champion=model, champion_version="4")
    assert same["bootstrap"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "samples": 300.0}
    record = decide_promotion(same, settings)
    assert record.verdict == "reject"
    assert [g.name for g in record.gates if not g.passed] == ["differs_from_champion"]
    strict = dataclasses.replace(settings, min_delta=0.01)
    gated = decide_promotion(same, strict)
    beats = next(g for g in gated.gates if g.name == "beats_champion")
    assert not beats.passed
    assert beats.detail.startswith("macro F1 gain +0.0000 (higher is better; min +0.0100)")

    # A challenger that learnt nothing is rejected by the bootstrap gate, which names the metric.
    worse = _train(settings, _shuffled_label(train, "target"), valid)
    record = decide_promotion(compare_on_holdout(holdout, settings, worse, model, "4"), settings)
    assert record.verdict == "reject"
    failed = [g for g in record.gates if not g.passed]
    assert failed[0].name == "beats_champion"
    assert failed[0].detail.startswith("macro F1 gain -")
    assert record.gain is not None
    assert record.gain["ci_high"] < 0
    assert DecisionRecord.from_dict(json.loads(json.dumps(record.as_dict()))) == record


def test_a_multiclass_holdout_class_the_model_never_saw_is_named():
    frame = _wine()
    settings = _settings(frame, "target", "multiclass")
    train, valid, holdout = _splits(frame)
    model = _train(settings, train, valid)
    odd = holdout.assign(target=["nebbiolo", *holdout["target"].iloc[1:]])
    with pytest.raises(LabelDoesNotFitTask, match=r"'target'.*\['nebbiolo'\].*not among the model's classes"):
        compare_on_holdout(odd, settings, model)


# -- binary ------------------------------------------------------------------------------------------
def test_breast_cancer_binary_with_string_labels_and_a_named_positive_class():
    frame = _breast_cancer()
    settings = _settings(frame, "target", "binary")
    train, valid, holdout = _splits(frame)
    model = _train(settings, train, valid)
    assert model.spec.classes == ("benign", "malignant")  # (negative, positive): the larger sorted value
    assert model.spec.positive_class == "malignant"
    assert model.spec.label_vector(holdout).tolist() == (holdout["target"] == "malignant").astype(int).tolist()

    evaluation = compare_on_holdout(holdout, settings, model)
    chal: dict[str, Any] = dict(evaluation["challenger"]["metrics"])
    assert chal["roc_auc"] > 0.95
    assert set(chal) >= {"roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "f1"}
    assert decide_promotion(evaluation, settings).verdict == "promote"

    copy = LoadedModel(booster=model.booster, spec=model.spec, uri="memory://copy")
    same = compare_on_holdout(holdout, settings, copy, champion=model, champion_version="2")
    assert same["bootstrap"] is not None
    assert same["bootstrap"]["ci_low"] == same["bootstrap"]["ci_high"] == 0.0
    assert decide_promotion(same, settings).verdict == "reject"

    worse = _train(settings, _shuffled_label(train, "target"), valid)
    record = decide_promotion(compare_on_holdout(holdout, settings, worse, model, "2"), settings)
    assert record.verdict == "reject"
    assert record.auc_gain is not None
    assert record.auc_gain == record.gain
    assert any(r.startswith("beats_champion: ROC AUC gain -") for r in record.reasons)

    benign = dataclasses.replace(settings, positive_class="benign")
    flipped = _train(benign, train, valid)
    assert flipped.spec.classes == ("malignant", "benign")
    flipped_auc = compare_on_holdout(holdout, benign, flipped)["challenger"]["metrics"]["roc_auc"]
    assert flipped_auc is not None
    assert flipped_auc > 0.95
    with pytest.raises(SettingsError, match=r"CT_POSITIVE_CLASS 'tumour' names neither .*'target'"):
        FeatureSpec.from_frame(train, dataclasses.replace(settings, positive_class="tumour"))


def test_a_spec_stored_before_tasks_existed_loads_as_binary_zero_one():
    old = {"numeric": ["amount"], "categories": {"channel": ["online", "pos"]}, "label": "is_fraud"}
    spec = FeatureSpec.from_dict(old)
    assert (spec.task, spec.classes, spec.positive_class) == ("binary", (0, 1), 1)
    assert spec.label_vector(pd.DataFrame({"is_fraud": [1, 0, 1]})).tolist() == [1, 0, 1]
    again = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


# -- regression ----------------------------------------------------------------------------------------
def test_diabetes_regression_trains_and_is_gated_on_rmse_lower_is_better():
    frame = _diabetes()
    settings = _settings(frame, "target", "regression", categorical=("sex",))
    train, valid, holdout = _splits(frame)
    model = _train(settings, train, valid, learning_rate=0.05, max_depth=3)
    assert model.spec.classes == ()
    assert json.loads(model.booster.save_config())["learner"]["objective"]["name"] == "reg:squarederror"

    evaluation = compare_on_holdout(holdout, settings, model)
    chal: dict[str, Any] = dict(evaluation["challenger"]["metrics"])
    assert chal["rmse"] < holdout["target"].std(ddof=0)
    assert chal["r2"] > 0.2
    assert chal["mae"] < chal["rmse"]
    assert set(evaluation["challenger"]["slices"]) == {"a", "b"}
    first = decide_promotion(evaluation, settings)
    assert first.verdict == "promote"
    assert (first.gate_metric, first.higher_is_better) == ("rmse", False)
    assert "no floor set" in first.gates[0].detail
    assert "lower is better" in first.gates[0].detail

    copy = LoadedModel(booster=model.booster, spec=model.spec, uri="memory://copy")
    same = compare_on_holdout(holdout, settings, copy, champion=model, champion_version="9")
    assert same["bootstrap"] is not None
    assert same["bootstrap"]["mean"] == 0.0
    assert decide_promotion(same, settings).verdict == "reject"

    worse = _train(settings, _shuffled_label(train, "target"), valid)
    record = decide_promotion(compare_on_holdout(holdout, settings, worse, model, "9"), settings)
    assert record.verdict == "reject"
    reason = next(r for r in record.reasons if r.startswith("beats_champion"))
    assert reason.startswith("beats_champion: RMSE gain -")
    assert "lower is better" in reason
    assert record.champion_metrics is not None
    assert _number(record.challenger_metrics["rmse"]) > _number(record.champion_metrics["rmse"])
    slices = next(g for g in record.gates if g.name == "slices")
    assert "RMSE gain" in slices.detail
    assert "sex=" in slices.detail

    ceiling = dataclasses.replace(settings, metric_floor=1.0)  # an RMSE of at most 1: out of reach
    capped = decide_promotion(evaluation, ceiling)
    assert capped.verdict == "reject"
    assert capped.reasons[0].startswith("floor: RMSE ")
    assert "vs floor 1.0000 (lower is better; CT_METRIC_FLOOR)" in capped.reasons[0]


# -- what each stage refuses -----------------------------------------------------------------------------
def test_a_label_that_does_not_fit_the_task_is_refused_naming_column_and_task():
    wine = _wine()
    with pytest.raises(LabelDoesNotFitTask, match=r"'target' \(CT_TASK=binary\) holds 3 classes"):
        FeatureSpec.from_frame(wine, _settings(wine, "target", "binary"))
    with pytest.raises(LabelDoesNotFitTask, match=r"'target' \(CT_TASK=regression\).*must be numeric"):
        FeatureSpec.from_frame(wine, _settings(wine, "target", "regression"))
    one_class = wine.assign(target="barolo")
    with pytest.raises(LabelDoesNotFitTask, match=r"'target' \(CT_TASK=multiclass\) holds one class"):
        FeatureSpec.from_frame(one_class, _settings(wine, "target", "multiclass"))
    diabetes = _diabetes()
    with pytest.raises(LabelDoesNotFitTask, match=r"more than CT_MAX_CLASSES=50"):
        FeatureSpec.from_frame(diabetes, _settings(diabetes, "target", "multiclass", categorical=("sex",)))


def test_a_multiclass_train_split_missing_a_class_fails_before_training():
    frame = _wine().sort_values("target").reset_index(drop=True)
    settings = _settings(frame, "target", "multiclass")
    classes = ("barbera", "barolo", "grignolino")
    splits = {"train": frame.iloc[:100], "validation": frame.iloc[60:120], "holdout": frame.iloc[110:]}
    with pytest.raises(TrainingDataError, match=r"train split .*lacks classes \['grignolino'\]"):
        check_splits(splits, settings, classes, "w")


def test_objectives_and_early_stopping_follow_the_task():
    base = load_settings({})
    binary, _, _ = training_params(base, None, "cpu")
    assert (binary["objective"], binary["eval_metric"][-1]) == ("binary:logistic", "logloss")
    multi, _, _ = training_params(dataclasses.replace(base, task="multiclass"), None, "cpu", 3)
    assert (multi["objective"], multi["num_class"], multi["eval_metric"][-1]) == ("multi:softprob", 3, "mlogloss")
    regression, _, _ = training_params(dataclasses.replace(base, task="regression"), None, "cpu")
    assert (regression["objective"], regression["eval_metric"][-1]) == ("reg:squarederror", "rmse")
    assert training_params(base, {"scale_pos_weight": 5}, "cpu")[0]["scale_pos_weight"] == 5.0
    with pytest.raises(ConfigurationError, match="scale_pos_weight applies to binary models only"):
        training_params(dataclasses.replace(base, task="regression"), {"scale_pos_weight": 5}, "cpu")


def test_the_gate_metric_setting_must_fit_the_task():
    with pytest.raises(SettingsError, match=r"CT_GATE_METRIC 'rmse' is not a binary metric"):
        load_settings({"CT_GATE_METRIC": "rmse"})
    chosen = gate_metric(load_settings({"CT_TASK": "multiclass", "CT_GATE_METRIC": "log_loss"}))
    assert (chosen.name, chosen.higher_is_better, chosen.floor) == ("log_loss", False, None)
    assert gate_metric(load_settings({})).floor == 0.70  # binary default: CT_ROC_AUC_FLOOR
    assert gate_metric(load_settings({"CT_ROC_AUC_FLOOR": "0.8"})).floor == 0.8
    assert gate_metric(load_settings({"CT_METRIC_FLOOR": "0.9"})).floor == 0.9


@pytest.mark.parametrize(
    ("task", "names"),
    [
        ("binary", ["roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "f1"]),
        ("multiclass", ["macro_f1", "accuracy", "log_loss", "roc_auc"]),
        ("regression", ["rmse", "mae", "r2"]),
    ],
)
def test_the_bootstrap_metric_of_a_resample_equals_the_metric_of_the_resampled_rows(task, names):
    rng = np.random.default_rng(5)
    n = 400
    if task == "binary":
        y = (rng.random(n) < 0.3).astype(int)
        output = np.clip(np.round(rng.random(n) * 0.6 + 0.35 * y, 2), 0.01, 0.99)
    elif task == "multiclass":
        y = rng.integers(0, 4, n)
        raw = rng.random((n, 4)) + np.eye(4)[y] * 0.8
        output = raw / raw.sum(axis=1, keepdims=True)
    else:
        y = rng.normal(10, 3, n)
        output = y + rng.normal(0, 1.5, n)
    index = rng.integers(0, n, n)
    weights = np.bincount(index, minlength=n)[None, :].astype(float)
    expected = task_metrics(task, y[index], output[index], 0.5)
    for name in names:
        got = weighted_metric(name, task, y, output, weights, 0.5)[0]
        assert got == pytest.approx(expected[name], abs=1e-9), name


# -- serving, smoke test and drift ---------------------------------------------------------------------------
def test_response_entries_and_the_smoke_comparison_follow_the_task():
    wine = _wine()
    settings = _settings(wine, "target", "multiclass")
    train, valid, holdout = _splits(wine)
    model = _train(settings, train, valid)
    output = model.spec.predict(model.booster, model.spec.matrix(holdout.head(3)))
    entries = predictions_of(model.spec, output, 0.5)
    assert set(entries[0]) == {"prediction_id", "label", "probability", "probabilities", "score"}
    assert set(entries[0]["probabilities"]) == {"barbera", "barolo", "grignolino"}
    assert entries[0]["probability"] == max(entries[0]["probabilities"].values()) == entries[0]["score"]
    assert entries[0]["label"] == max(entries[0]["probabilities"], key=entries[0]["probabilities"].get)
    expected, labels = offline_predictions(model, holdout.head(3), 0.5)
    assert labels is not None
    assert prediction_difference("multiclass", entries[0], expected[0], labels[0]) == 0.0
    wrong = {**entries[0], "label": "nebbiolo"}
    assert prediction_difference("multiclass", wrong, expected[0], labels[0]) == float("inf")

    diabetes = _diabetes()
    reg_settings = _settings(diabetes, "target", "regression", categorical=("sex",))
    reg_train, reg_valid, reg_holdout = _splits(diabetes)
    regressor = _train(reg_settings, reg_train, reg_valid)
    values = regressor.spec.predict(regressor.booster, regressor.spec.matrix(reg_holdout.head(2)))
    entry = predictions_of(regressor.spec, values, 0.5)[0]
    assert set(entry) == {"prediction_id", "prediction", "score"}
    assert entry["prediction"] > 25  # diabetes progression, not a probability
    offline, none = offline_predictions(regressor, reg_holdout.head(2), 0.5)
    assert none is None
    assert prediction_difference("regression", entry, offline[0]) == 0.0
    # Relative: 1e-7 of a prediction near 150 is within tolerance, 1e-3 of it is not.
    assert prediction_difference("regression", {"prediction": offline[0] * (1 + 1e-7)}, offline[0]) < 1e-6
    assert prediction_difference("regression", {"prediction": offline[0] * (1 + 1e-3)}, offline[0]) > 1e-6


def test_realized_performance_and_the_retrain_floor_follow_the_task():
    diabetes = _diabetes()
    settings = dataclasses.replace(
        _settings(diabetes, "target", "regression", categorical=("sex",)), drift_min_rows=50, metric_floor=30.0
    )
    ids = [f"p{i}" for i in range(len(diabetes))]
    window = pd.DataFrame({"prediction_id": ids, "score": diabetes["target"] + 60.0, "label": None})
    feedback = pd.DataFrame({"prediction_id": ids, "target": diabetes["target"]})
    spec = FeatureSpec((), {}, "target", "regression", ())
    realized = realized_performance(window, feedback, settings, spec)
    assert realized is not None
    assert realized["rmse"] == pytest.approx(60.0)
    assert realized["labelled_rows"] == len(diabetes)
    current = {"status": "measured", "drift_share": 0.0, "drifted_features": [], "realized_performance": realized}
    decision = decide_retraining(current, [], settings, pd.Timestamp("2026-01-02", tz="UTC"), None, False)
    assert decision.action == "retrain"
    assert decision.reasons[0].startswith("realized RMSE 60.0000 on 442 labelled rows is above the floor 30.0000")

    wine = _wine()
    classes = ("barbera", "barolo", "grignolino")
    multi = FeatureSpec((), {}, "target", "multiclass", classes)
    wine_ids = [f"w{i}" for i in range(len(wine))]
    served = pd.DataFrame({"prediction_id": wine_ids, "score": 0.9, "label": wine["target"]})
    served.loc[:9, "label"] = "grignolino"  # the first rows are barbera: ten wrong predictions
    labels = pd.DataFrame({"prediction_id": wine_ids, "target": wine["target"]})
    wine_settings = dataclasses.replace(_settings(wine, "target", "multiclass"), drift_min_rows=50)
    got = realized_performance(served, labels, wine_settings, multi)
    assert got is not None
    assert (wine["target"].iloc[:10] == "barbera").all()
    assert got["accuracy"] == pytest.approx(1 - 10 / len(wine))
    assert 0.9 < got["macro_f1"] < 1.0


def test_the_drift_check_scores_a_regression_reference_with_its_predictions():
    from include.continuous_training.drift import compute_drift

    diabetes = _diabetes()
    settings = _settings(diabetes, "target", "regression", categorical=("sex",))
    train, valid, holdout = _splits(diabetes)
    model = _train(settings, train, valid)
    reference = train[list(model.spec.feature_names)]

    def logged(frame: pd.DataFrame) -> pd.DataFrame:  # what the inference log holds: features and score
        spec = model.spec
        return frame.assign(score=spec.scores(spec.predict(model.booster, spec.matrix(frame))))

    shifted = logged(holdout.assign(bmi=holdout["bmi"] + 0.1, s5=holdout["s5"] + 0.1))  # heavier, sicker
    assert shifted["score"].max() > 1.0
    summary, _ = compute_drift(reference, shifted, model, settings)
    assert summary["status"] == "measured"
    assert {"bmi", "s5"} <= set(summary["drifted_features"])
    assert summary["prediction_drift"] is True  # the predicted progression moved, on its own scale
    same, _ = compute_drift(reference, logged(train), model, settings)
    assert same["prediction_drift"] is False
    assert same["drifted_features"] == []


def test_the_drift_check_scores_a_multiclass_reference_with_the_predicted_class_probability():
    from include.continuous_training.drift import compute_drift

    wine = _wine()
    settings = _settings(wine, "target", "multiclass")
    train, valid, _ = _splits(wine)
    model = _train(settings, train, valid)
    spec = model.spec
    logged = train.assign(score=spec.scores(spec.predict(model.booster, spec.matrix(train))))
    assert logged["score"].between(1 / 3, 1.0).all()
    summary, _ = compute_drift(train[list(spec.feature_names)], logged, model, settings)
    assert summary["status"] == "measured"
    assert summary["columns"]["score"]["drifted"] is False
    assert summary["drifted_features"] == []
