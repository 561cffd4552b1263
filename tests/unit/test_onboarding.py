"""init-model / check-model on real public tables: the written model file and suite, and every mismatch named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from include.continuous_training.config import Settings, load_settings
from include.continuous_training.model_files import load_model_file
from include.continuous_training.onboarding import (
    OnboardingError,
    check_model,
    infer_table_model,
    init_model,
    read_sample,
)
from include.continuous_training.validation import validate_batch
from tests.conftest import ROOT

MEASUREMENTS = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year")


def penguins():
    from palmerpenguins import load_penguins

    return load_penguins()


@pytest.fixture(scope="module")
def penguin_files(tmp_path_factory):
    """palmerpenguins as Parquet (island / sex / species as pandas category) and as CSV."""
    folder = tmp_path_factory.mktemp("penguins")
    frame = penguins()
    categorical = frame.astype({c: "category" for c in ("island", "sex", "species")})
    categorical.to_parquet(folder / "penguins.parquet")
    frame.to_csv(folder / "penguins.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def penguin_model(penguin_files):
    """init-model on the Parquet file, once for the module (each call validates with GX: seconds)."""
    models = penguin_files / "models"
    result = init_model(penguin_files / "penguins.parquet", "species", "penguins", models_dir=models)
    return result, models


def written_settings(model_path: Path) -> Settings:
    """The settings a written model file gives, read by the loader the DAGs use."""
    return load_settings(environ={}, model=load_model_file(model_path))


def test_penguins_parquet_with_categories_becomes_a_multiclass_model(penguin_model, penguin_files):
    result, models = penguin_model
    written = yaml.safe_load((models / "penguins.yaml").read_text())
    assert written["name"] == "penguins"
    assert written["task"] == "multiclass"
    assert written["suite"] == "penguins.suite.json"
    table = written["table"]
    assert table["label"] == "species"
    assert table["categorical"] == ["island", "sex"]
    assert table["numeric"] == list(MEASUREMENTS)
    assert table["id"] is None
    assert table["event_time"] is None
    lines = result.report_lines()
    assert "island: categorical (pandas category, 3 values)" in lines
    assert any(line.startswith("task: multiclass (label 'species' has 3 classes") for line in lines)

    # The suite accepts the very file it was built from, read as ingest reads it: the categories as
    # pandas `category` (the dtype GX's type check used to reject).
    settings = written_settings(models / "penguins.yaml")
    frame = read_sample(penguin_files / "penguins.parquet", settings)
    assert str(frame["island"].dtype) == "category"
    outcome = validate_batch(frame, settings)
    assert outcome.failures == []
    assert outcome.flags == []
    assert result.self_check == []
    suite = json.loads((models / "penguins.suite.json").read_text())
    label_set = [
        e for e in suite["expectations"] if e["kwargs"].get("column") == "species" and "value_set" in e["kwargs"]
    ]
    assert label_set[0]["kwargs"]["value_set"] == ["Adelie", "Chinstrap", "Gentoo"]

    clean = check_model("penguins", sample=penguin_files / "penguins.csv", models_dir=models)
    assert clean.problems == []


def test_penguins_csv_gives_the_same_model(penguin_files):
    """From CSV too; a shell's table variables (another table's) are not used, only warned about."""
    shell = {"CT_LABEL_COLUMN": "is_fraud", "CT_NUMERIC_COLUMNS": "amount"}
    result = init_model(
        penguin_files / "penguins.csv", "species", "penguins_csv", models_dir=penguin_files / "csv", environ=shell
    )
    assert result.model.task == "multiclass"
    assert result.model.categorical == ("island", "sex")
    assert result.model.numeric == MEASUREMENTS
    assert (result.model.id_column, result.model.event_time) == (None, None)
    assert "island: categorical (object string, 3 values)" in result.report_lines()
    assert result.self_check == []
    assert [line.split(": ")[1] for line in result.overridden] == ["table.label", "table.numeric"]


def test_breast_cancer_is_binary_with_numeric_features_only(tmp_path):
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    result = init_model(tmp_path / "cancer.csv", "target", "cancer", models_dir=tmp_path)
    assert result.model.task == "binary"
    assert result.model.categorical == ()
    assert set(result.model.numeric) == set(frame.columns) - {"target"}
    assert result.self_check == []
    assert check_model("cancer", sample=tmp_path / "cancer.csv", models_dir=tmp_path).problems == []


def test_diabetes_is_regression(tmp_path):
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    frame.to_parquet(tmp_path / "diabetes.parquet")
    result = init_model(tmp_path / "diabetes.parquet", "target", "diabetes", models_dir=tmp_path)
    assert result.model.task == "regression"
    assert "numeric with 214 distinct values" in result.model.task_reason
    assert result.self_check == []
    assert check_model("diabetes", sample=tmp_path / "diabetes.parquet", models_dir=tmp_path).problems == []

    as_text = frame.assign(target=frame["target"].map(lambda v: f"{v:.0f} units"))
    as_text.to_parquet(tmp_path / "text_target.parquet")
    problems = check_model("diabetes", sample=tmp_path / "text_target.parquet", models_dir=tmp_path).problems
    assert any("label 'target' is object, not numeric" in p for p in problems), problems


def test_a_broken_sample_is_named_problem_by_problem(penguin_model, penguin_files):
    _, models = penguin_model
    broken = penguins().drop(columns=["body_mass_g"]).assign(species="Adelie", colour="blue")
    broken.to_csv(penguin_files / "broken.csv", index=False)
    problems = check_model("penguins", sample=penguin_files / "broken.csv", models_dir=models).problems
    assert "sample broken.csv: lacks the feature column 'body_mass_g'" in problems
    assert "sample broken.csv: column 'colour' is not in the suite: ingest would quarantine it" in problems
    assert any(
        "label 'species' has 1 value(s) ('Adelie'): a multiclass model needs at least two" in p for p in problems
    )
    assert len(problems) == 3, problems


def test_a_wrong_sample_dtype_is_what_ingest_would_reject(penguin_model, penguin_files):
    _, models = penguin_model
    frame = penguins()
    frame["flipper_length_mm"] = frame["flipper_length_mm"].map(lambda v: f"{v} mm")
    frame.to_csv(penguin_files / "text_flipper.csv", index=False)
    problems = check_model("penguins", sample=penguin_files / "text_flipper.csv", models_dir=models).problems
    assert any(
        "ingest would fail expect_column_values_to_be_in_type_list on column `flipper_length_mm`" in p for p in problems
    )


def edited_model(models: Path, target: Path, edit) -> None:
    target.mkdir(exist_ok=True)
    model = yaml.safe_load((models / "penguins.yaml").read_text())
    edit(model)
    (target / "penguins.yaml").write_text(yaml.safe_dump(model))
    (target / "penguins.suite.json").write_text((models / "penguins.suite.json").read_text())


def test_init_model_says_when_the_suite_rejects_its_own_sample(tmp_path):
    """Event times after the ingest time are bad rows: a sample dated ahead fails its own new suite."""
    import pandas as pd

    frame = penguins()
    frame["seen_at"] = pd.date_range("2099-01-01", periods=len(frame), freq="h", tz="America/Santiago")
    frame.to_parquet(tmp_path / "ahead.parquet")
    result = init_model(tmp_path / "ahead.parquet", "species", "ahead", models_dir=tmp_path)
    assert result.model.event_time == "seen_at"
    assert len(result.self_check) == 1, result.self_check  # the time-zone-aware column's type passes
    assert "344 of 344 rows have event times after" in result.self_check[0]
    assert "the suite REJECTS its own sample; review it:" in result.report_lines()


def test_a_model_file_that_disagrees_with_its_suite_is_named(penguin_model, tmp_path):
    _, models = penguin_model

    def add_feature_drop_year_slice_on_a_number(model):
        model["table"]["numeric"] = [*model["table"]["numeric"][:-1], "bill_ratio"]
        model["gates"] = {"CT_SLICE_COLUMN": "year"}

    edited_model(models, tmp_path, add_feature_drop_year_slice_on_a_number)
    problems = check_model("penguins", models_dir=tmp_path).problems
    path = tmp_path / "penguins.yaml"
    assert any(p.startswith(f"{path}: table.numeric 'bill_ratio' is not a column of the suite") for p in problems)
    assert any(p.startswith("penguins.suite.json: column 'year' is neither a feature nor") for p in problems)
    assert (
        f"{path}: gates.CT_SLICE_COLUMN 'year' is not a categorical feature (table.categorical: ['island', 'sex'])"
        in problems
    )
    assert len(problems) == 3, problems


def test_a_feature_of_the_wrong_kind_is_named(penguin_model, tmp_path):
    _, models = penguin_model

    def island_as_number(model):
        model["table"]["categorical"].remove("island")
        model["table"]["numeric"].append("island")

    edited_model(models, tmp_path, island_as_number)
    problems = check_model("penguins", models_dir=tmp_path).problems
    assert len(problems) == 1
    assert "table.numeric 'island': the suite penguins.suite.json accepts only" in problems[0]


def test_schema_errors_name_the_field_and_the_file(penguin_model, tmp_path):
    _, models = penguin_model
    path = tmp_path / "penguins.yaml"

    edited_model(models, tmp_path, lambda model: model["table"].pop("label"))
    assert check_model("penguins", models_dir=tmp_path).problems == [f"{path}: table.label: required"]

    edited_model(models, tmp_path, lambda model: model.update(name="pinguins"))
    problems = check_model("penguins", models_dir=tmp_path).problems
    assert problems == [f"{path}: name: 'pinguins' must match the file name ('penguins')"]

    missing = check_model("nobody", models_dir=tmp_path).problems
    assert missing[0].startswith(f"{tmp_path / 'nobody.yaml'}: cannot read")


def test_an_environment_that_overrides_the_model_file_is_named(penguin_model):
    """The environment wins over a model file: a CT_LABEL_COLUMN left in the shell replaces the label."""
    _, models = penguin_model
    problems = check_model("penguins", models_dir=models, environ={"CT_LABEL_COLUMN": "is_fraud"}).problems
    path = models / "penguins.yaml"
    assert (
        f"{path}: table.label: the environment's CT_LABEL_COLUMN='is_fraud' wins over the model file's 'species'"
        in problems
    )
    assert check_model("penguins", models_dir=models, environ={}).problems == []


def test_column_kinds_on_a_penguins_table_with_every_awkward_column():
    """Ids, row numbers, datetimes (naive, aware, ISO text), free text, constants, nulls and booleans."""
    import pandas as pd

    frame = penguins()
    rows = len(frame)
    frame["penguin_id"] = [f"P{i:04d}" for i in range(rows)]
    frame["Unnamed: 0"] = range(rows)
    frame["seen_at"] = pd.date_range("2026-01-01", periods=rows, freq="h", tz="Europe/Oslo")
    frame["notes"] = [f"bird number {i} seen near the {island} colony" for i, island in enumerate(frame["island"])]
    frame["station"] = "Palmer"
    frame["empty"] = None
    frame["tagged"] = frame["year"] % 2 == 0
    model = infer_table_model(frame, "species", "awkward")
    kinds = {d.column: d.kind for d in model.decisions}
    assert model.id_column == "penguin_id"
    assert model.event_time == "seen_at"
    assert kinds["Unnamed: 0"] == "ignored"
    assert kinds["notes"] == "ignored"
    assert set(model.ignored) == {"Unnamed: 0", "notes", "station", "empty"}
    assert model.numeric == (*MEASUREMENTS, "tagged")
    assert model.categorical == ("island", "sex")

    two_times = frame.assign(hatched=frame["seen_at"].dt.strftime("%Y-%m-%d"))
    model = infer_table_model(two_times, "species", "awkward")
    assert model.event_time is None
    assert "2 datetime columns ['seen_at', 'hatched']: none chosen, pass --event-time" in model.event_time_reason
    chosen = infer_table_model(two_times, "species", "awkward", event_time="hatched")
    assert chosen.event_time == "hatched"
    assert "seen_at" in chosen.ignored


def test_task_inference_and_refusals():
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame
    model = infer_table_model(wine, "target", "wine")
    assert model.task == "multiclass"
    assert infer_table_model(wine, "alcohol", "wine").task == "regression"
    with pytest.raises(OnboardingError, match="--task binary: label 'target' has 3 values"):
        infer_table_model(wine, "target", "wine", task="binary")
    with pytest.raises(OnboardingError, match="label 'target' has 1 distinct value"):
        infer_table_model(wine.assign(target=1), "target", "wine")
    with pytest.raises(OnboardingError, match="--label 'class' is not a column"):
        infer_table_model(wine, "class", "wine")
    with pytest.raises(OnboardingError, match=r"no feature column: station: ignored \(constant"):
        infer_table_model(wine[["target"]].assign(station="Palmer"), "target", "wine")
    with pytest.raises(OnboardingError, match="model name 'Wine'"):
        infer_table_model(wine, "target", "Wine")


def test_the_cli_writes_both_files_and_refuses_to_overwrite(penguin_files, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "include.continuous_training", "init-model"]
    args = ["--reference", str(penguin_files / "penguins.csv"), "--label", "species", "--name", "penguins"]
    args += ["--models-dir", "models"]
    done = subprocess.run([*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "island: categorical (object string, 3 values)" in done.stdout
    assert "the suite validates the sample: 344 rows, 0 failed expectations" in done.stdout
    assert yaml.safe_load((tmp_path / "models" / "penguins.yaml").read_text())["task"] == "multiclass"
    suite = (tmp_path / "models" / "penguins.suite.json").read_text()

    again = subprocess.run([*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 1
    assert "already exist: nothing written (--force replaces them)" in again.stderr
    assert (tmp_path / "models" / "penguins.suite.json").read_text() == suite

    check = [sys.executable, "-m", "include.continuous_training", "check-model", "penguins", "--models-dir", "models"]
    checked = subprocess.run(check, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no problems" in checked.stdout


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_booleans_and_nullable_ints_are_numeric_and_their_suite_validates_the_sample(tmp_path, kind):
    import pandas as pd

    frame = penguins()
    frame["tagged"] = frame["year"] % 2 == 0
    frame["chicks"] = pd.array([None if i % 7 == 0 else i % 3 for i in range(len(frame))], dtype="Int64")
    sample = tmp_path / f"penguins.{kind}"
    frame.to_parquet(sample) if kind == "parquet" else frame.to_csv(sample, index=False)
    result = init_model(sample, "species", "tagged", models_dir=tmp_path)
    assert result.model.numeric == (*MEASUREMENTS, "tagged", "chicks")
    assert result.self_check == []
