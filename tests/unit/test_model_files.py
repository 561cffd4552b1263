"""Model files: one YAML file per model, checked field by field, and the settings each gives."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.continuous_training.config import DEFAULT_SUITE_PATH, SettingsError, load_settings
from include.continuous_training.model_files import (
    ModelFileError,
    discover_model_files,
    find_model_file,
    load_model_file,
)
from tests.conftest import ROOT

PENGUINS: dict[str, Any] = {
    "name": "penguins",
    "task": "multiclass",
    "description": "Palmer penguins",
    "table": {
        "label": "species",
        "numeric": ["bill_length_mm", "body_mass_g"],
        "categorical": ["island", "sex"],
    },
    "suite": "penguins.suite.json",
}


def write_model(directory: Path, document: dict, name: str | None = None) -> Path:
    """``document`` as ``directory/<name>.yaml``, with a suite file beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEFAULT_SUITE_PATH, directory / "penguins.suite.json")
    path = directory / f"{name or document['name']}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def with_changes(**changes) -> dict:
    document = {**PENGUINS, "table": dict(PENGUINS["table"])}
    for key, value in changes.items():
        if key.startswith("table_"):
            document["table"][key.removeprefix("table_")] = value
        else:
            document[key] = value
    return document


def error_of(tmp_path: Path, document: dict, name: str | None = None) -> str:
    with pytest.raises(ModelFileError) as raised:
        load_model_file(write_model(tmp_path, document, name))
    return str(raised.value)


def test_the_bundled_model_file_gives_the_settings_the_bundled_defaults_give():
    bundled = load_settings({}, model="transactions")
    defaults = load_settings({})
    differing = [f.name for f in dataclasses.fields(bundled) if getattr(bundled, f.name) != getattr(defaults, f.name)]
    assert differing == ["model"]
    assert bundled.model == "transactions"
    [model] = discover_model_files(ROOT / "models")
    assert (model.name, model.dag_id("train_and_deploy"), model.asset_name) == (
        "transactions",
        "train_and_deploy",
        "curated_batches",
    )


def test_a_model_file_gives_its_table_task_suite_prefixes_and_registry_name(tmp_path):
    model = load_model_file(write_model(tmp_path, PENGUINS))
    settings = load_settings({}, model=model)
    assert settings.task == "multiclass"
    assert settings.label_column == "species"
    assert settings.numeric_columns == ("bill_length_mm", "body_mass_g")
    assert settings.categorical_columns == ("island", "sex")
    assert (settings.id_column, settings.timestamp_column) == ("", "")  # omitted: derived at ingest
    assert (settings.row_id_column, settings.event_time_column) == ("ct_row_id", "ct_ingested_at")
    assert settings.expectation_suite_path == (tmp_path / "penguins.suite.json").resolve()
    assert settings.model_name == "ct-penguins"
    assert settings.mlflow_experiment == "continuous-training-penguins"
    assert settings.landing_prefix == "penguins/landing/"
    assert settings.curated_prefix == "penguins/curated/"
    assert settings.manifest_prefix == "penguins/manifests/ingest/"
    assert settings.slice_column == ""  # the bundled table's `channel` is not this table's
    assert model.dag_id("monitor_drift") == "monitor_drift_penguins"
    assert model.asset_name == "curated_batches_penguins"
    assert model.schedules == {"ingest": "0 * * * *", "train": "0 4 * * 1", "drift": "0 5 * * *"}


def test_a_table_with_no_categorical_column_keeps_an_empty_list(tmp_path):
    document = with_changes(table_numeric=["radius", "texture"], table_categorical=[], table_label="malignant")
    settings = load_settings({}, model=load_model_file(write_model(tmp_path, document)))
    assert settings.categorical_columns == ()  # not the bundled defaults (merchant_category, ...)
    assert settings.feature_columns == ("radius", "texture")


def test_gates_and_settings_sections_set_model_level_settings(tmp_path):
    document = with_changes(
        gates={"CT_SLICE_COLUMN": "island", "CT_SLICE_TOLERANCE": 0.05},
        settings={"CT_MAX_DEPTH": 4, "CT_DRIFT_USE_IMPORTANCE": True},
        schedules={"train": "@daily"},
        storage={"prefix": "zoo/penguins"},
        registered_model="penguin-species",
    )
    model = load_model_file(write_model(tmp_path, document))
    settings = load_settings({}, model=model)
    assert (settings.slice_column, settings.slice_tolerance) == ("island", 0.05)
    assert (settings.max_depth, settings.drift_use_importance) == (4, True)
    assert settings.model_name == "penguin-species"
    assert settings.training_prefix == "zoo/penguins/training/"
    assert model.schedules["train"] == "@daily"


def test_the_environment_wins_over_the_file_and_the_file_over_variables(tmp_path):
    document = with_changes(settings={"CT_MAX_DEPTH": 4, "CT_LEARNING_RATE": 0.2})
    model = load_model_file(write_model(tmp_path, document))
    variables = {"CT_MAX_DEPTH": "9", "CT_LEARNING_RATE": "0.3", "CT_NUM_BOOST_ROUND": "50"}
    settings = load_settings({"CT_MAX_DEPTH": "7"}, variables=variables.get, model=model)
    assert settings.max_depth == 7  # environment
    assert settings.learning_rate == 0.2  # model file, not the Variable
    assert settings.num_boost_round == 50  # the file is silent: the Variable


def test_ct_model_selects_the_file_for_processes_outside_dags(tmp_path):
    write_model(tmp_path, PENGUINS)
    settings = load_settings({"CT_MODEL": "penguins", "CT_MODELS_DIR": str(tmp_path)})
    assert (settings.model, settings.label_column) == ("penguins", "species")
    with pytest.raises(ModelFileError, match=r"CT_MODEL='seals': no model file .*seals\.yaml .*penguins"):
        load_settings({"CT_MODEL": "seals", "CT_MODELS_DIR": str(tmp_path)})
    assert find_model_file("penguins", tmp_path).name == "penguins"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"table_label": None}, r"table\.label: expected a non-empty string"),
        ({"task": "ranking"}, r"task: 'ranking': expected one of \('binary', 'multiclass', 'regression'\)"),
        ({"suite": "missing.json"}, r"suite: no such file: .*missing\.json"),
        ({"tabel": {}}, r"tabel: unknown field; did you mean 'table'\?"),
        ({"table_numeric": ["a", "a"]}, r"table\.numeric: listed twice: \['a'\]"),
        ({"table_numeric": ["island"]}, r"table: listed as both numeric and categorical: \['island'\]"),
        ({"table_numeric": [], "table_categorical": []}, r"table: no features"),
        ({"table_id": "island"}, r"table\.id: 'island' is also listed as a feature"),
        ({"table_categorical": "island"}, r"table\.categorical: expected a list of column names"),
        ({"settings": {"CT_MAX_DEPTH": "six"}}, r"settings\.CT_MAX_DEPTH: 'six': expected an integer"),
        ({"settings": {"CT_MAX_DEPHT": 3}}, r"settings\.CT_MAX_DEPHT: unknown field; did you mean 'CT_MAX_DEPTH'\?"),
        ({"settings": {"CT_S3_BUCKET": "other"}}, r"settings\.CT_S3_BUCKET: deployment-wide"),
        ({"settings": {"CT_SERVING_ADMIN_TOKEN": "x" * 20}}, r"settings\.CT_SERVING_ADMIN_TOKEN: deployment-wide"),
        ({"gates": {"CT_LABEL_COLUMN": "sex"}}, r"gates\.CT_LABEL_COLUMN: set it with the model file's `table\.label`"),
        ({"schedules": {"hourly": "0 * * * *"}}, r"schedules\.hourly: unknown field"),
        ({"dag_suffix": "-x"}, r"dag_suffix: '-x'"),
        ({"name": "Penguins!"}, r"name: 'Penguins!': lowercase letters"),
    ],
)
def test_a_mistake_names_the_file_and_the_field(tmp_path, changes, message):
    text = error_of(tmp_path, with_changes(**changes), name="penguins")
    assert text.startswith(str(tmp_path / "penguins.yaml") + ": ")
    assert re.search(message, text), text


def test_required_fields_and_the_file_name_are_checked(tmp_path):
    for field in ("name", "task", "table", "suite"):
        document = {k: v for k, v in PENGUINS.items() if k != field}
        assert error_of(tmp_path, document, name="penguins").endswith(f"{field}: required")
    assert "must match the file name ('seals')" in error_of(tmp_path, PENGUINS, name="seals")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ModelFileError, match=r"broken\.yaml: not valid YAML"):
        load_model_file(tmp_path / "broken.yaml")


def test_a_contradiction_found_by_the_settings_names_the_file(tmp_path):
    document = with_changes(gates={"CT_SLICE_COLUMN": "bill_length_mm"})
    model = load_model_file(write_model(tmp_path, document))
    with pytest.raises(SettingsError, match=r"penguins\.yaml: CT_SLICE_COLUMN 'bill_length_mm' must be one of"):
        load_settings({}, model=model)


def test_two_models_may_not_share_a_registry_entry_or_a_prefix(tmp_path):
    write_model(tmp_path, PENGUINS)
    write_model(tmp_path, with_changes(name="seals", registered_model="ct-penguins"))
    with pytest.raises(ModelFileError, match=r"seals\.yaml: same registered model 'ct-penguins' as .*penguins\.yaml"):
        discover_model_files(tmp_path)
    write_model(tmp_path, with_changes(name="seals", storage={"prefix": "penguins/"}))
    with pytest.raises(ModelFileError, match=r"same curated prefix 'penguins/curated/'"):
        discover_model_files(tmp_path)
    write_model(tmp_path, with_changes(name="seals"))
    assert [m.name for m in discover_model_files(tmp_path)] == ["penguins", "seals"]
