from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from include.continuous_training.config import (
    DEFAULT_SUITE_PATH,
    README_TABLE_END,
    README_TABLE_START,
    Settings,
    SettingsError,
    airflow_variable_lookup,
    declared_settings,
    load_settings,
    main,
    runtime_settings,
    settings_table_markdown,
)
from tests.conftest import ROOT

README = ROOT / "README.md"
TABLE_START = README_TABLE_START
TABLE_END = README_TABLE_END


def test_defaults_are_loopback_friendly_and_complete():
    settings = load_settings({})
    assert settings.s3_bucket == "ct-data"
    assert settings.landing_prefix == "landing/"
    assert settings.mlflow_tracking_uri.startswith("http://127.0.0.1:")
    assert settings.expectation_suite_path == DEFAULT_SUITE_PATH
    assert DEFAULT_SUITE_PATH.exists()
    assert settings.feature_columns[: len(settings.numeric_columns)] == settings.numeric_columns
    assert settings == Settings()


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
            "CT_DRIFT_USE_IMPORTANCE": "yes",
            "CT_SERVING_URL": "http://serving:8000/",
            "CT_S3_ENDPOINT_URL": "http://minio:9000",
            "CT_SERVING_STATE_DIR": "/var/lib/ct",
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
    assert settings.drift_use_importance is True
    assert settings.serving_url == "http://serving:8000"
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert str(settings.serving_state_dir) == "/var/lib/ct"


def test_an_empty_variable_counts_as_unset():
    assert load_settings({"CT_MAX_DEPTH": "", "CT_S3_ENDPOINT_URL": ""}) == Settings()


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_settings({}).s3_bucket = "other"  # type: ignore[misc]


def test_the_admin_token_never_shows_in_repr():
    settings = load_settings({"CT_SERVING_ADMIN_TOKEN": "tok-0123456789"})
    assert settings.serving_admin_token == "tok-0123456789"
    assert "tok-0123456789" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CT_LANDING_PREFIX": "../etc"}, "CT_LANDING_PREFIX='../etc': invalid S3 prefix"),
        ({"CT_S3_BUCKET": "ab"}, "at least 3 characters"),
        ({"CT_BAD_ROW_BUDGET": "1.5"}, "CT_BAD_ROW_BUDGET"),
        ({"CT_NUMERIC_COLUMNS": "amount,channel"}, "both categorical and numeric"),
        ({"CT_NUMERIC_COLUMNS": "amount,is_fraud"}, "cannot be features"),
        ({"CT_SLICE_COLUMN": "amount"}, "must be one of the categorical columns"),
        ({"CT_DEPLOYMENT_TARGET": "kubernetes"}, "CT_DEPLOYMENT_TARGET"),
        ({"CT_HOLDOUT_FRACTION": "0.5", "CT_VALIDATION_FRACTION": "0.45"}, "leave rows to train on"),
        ({"CT_DRIFT_WINDOWS_REQUIRED": "3", "CT_DRIFT_WINDOWS_CONSIDERED": "2"}, "CT_DRIFT_WINDOWS_REQUIRED"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings(env)


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("CT_MAX_DEPTH", "six", "CT_MAX_DEPTH='six': expected an integer"),
        ("CT_MAX_DEPTH", "6.5", "CT_MAX_DEPTH='6.5': expected an integer"),
        ("CT_LEARNING_RATE", "fast", "CT_LEARNING_RATE='fast': expected a number"),
        ("CT_DRIFT_SHARE", "nan", "CT_DRIFT_SHARE='nan': expected a finite number"),
        ("CT_SENSOR_POKE_SECONDS", "1e999", "CT_SENSOR_POKE_SECONDS='1e999': expected a finite number"),
        (
            "CT_DRIFT_USE_IMPORTANCE",
            "maybe",
            "CT_DRIFT_USE_IMPORTANCE='maybe': expected a boolean (1/0, true/false, yes/no)",
        ),
        ("CT_FEEDBACK_PREFIX", "/", "CT_FEEDBACK_PREFIX='/': invalid S3 prefix"),
    ],
)
def test_a_malformed_value_names_the_variable_and_the_expected_type(variable, raw, message):
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: raw})
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError keep working
    assert caught.value.__cause__ is None  # no "during handling of int()" noise in the task log


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("true", True), ("TRUE", True), (" Yes ", True), ("0", False), ("false", False), ("No", False)],
)
def test_booleans_accept_1_0_true_false_yes_no_in_any_case(raw, value):
    assert load_settings({"CT_DRIFT_USE_IMPORTANCE": raw}).drift_use_importance is value


@pytest.mark.parametrize("raw", ["on", "off", "2", "y", "truthy"])
def test_other_boolean_words_are_refused(raw):
    with pytest.raises(SettingsError, match="CT_DRIFT_USE_IMPORTANCE"):
        load_settings({"CT_DRIFT_USE_IMPORTANCE": raw})


class FakeVariables:
    """Stands in for the Airflow Variables an operator set; records what was asked."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: list[str] = []

    def __call__(self, name: str) -> str | None:
        self.asked.append(name)
        return self.values.get(name)


def test_precedence_is_environment_then_variable_then_default():
    variables = FakeVariables({"CT_MAX_DEPTH": "9", "CT_SEED": "11", "CT_GPU_QUEUE": "gpu-a100"})
    settings = load_settings({"CT_MAX_DEPTH": "4", "CT_GPU_QUEUE": ""}, variables=variables)
    assert settings.max_depth == 4  # environment beats the Variable
    assert settings.seed == 11  # Variable beats the default
    assert settings.gpu_queue == "gpu-a100"  # an empty environment variable counts as unset
    assert settings.num_boost_round == 400  # neither: the default
    # One lookup per setting, and only where the environment gave nothing.
    assert "CT_MAX_DEPTH" not in variables.asked
    assert sorted(variables.asked) == sorted(d.env for d in declared_settings() if d.env != "CT_MAX_DEPTH")


def test_a_malformed_variable_says_it_came_from_an_airflow_variable():
    with pytest.raises(SettingsError) as caught:
        load_settings({}, variables=FakeVariables({"CT_MAX_DEPTH": "six"}))
    assert str(caught.value) == "Airflow Variable CT_MAX_DEPTH='six': expected an integer"


def test_without_a_lookup_only_the_environment_is_read():
    assert load_settings({}) == Settings()
    assert load_settings({}, variables=FakeVariables({})) == Settings()


def test_importing_config_and_loading_settings_touch_no_airflow_and_nothing_outside_the_standard_library():
    """DAG files call load_settings() at parse time: no metadata DB, no API server, no heavy import."""
    code = (
        "import sys; before = set(sys.modules)\n"
        "from include.continuous_training.config import load_settings\n"
        "load_settings()\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'include'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


class FakeVariableApi:
    """The two calls runtime_settings makes on airflow.sdk.Variable, over a dict."""

    def __init__(self, stored: dict[str, str], listing: Exception | None = None) -> None:
        self.stored = stored
        self.listing = listing
        self.got: list[str] = []
        self.listed = 0

    def keys(self) -> list[str]:
        self.listed += 1
        if self.listing is not None:
            raise self.listing
        return list(self.stored)

    def get(self, name: str, default: str | None = None) -> str | None:
        self.got.append(name)
        return self.stored.get(name, default)


class FakeConf:
    def __init__(self, backend: str = "") -> None:
        self.backend = backend

    def get(self, section: str, key: str, fallback: str = "") -> str:
        return self.backend if (section, key) == ("secrets", "backend") else fallback


def test_inside_a_task_one_listing_then_only_existing_variables_are_fetched():
    api = FakeVariableApi({"CT_MAX_DEPTH": "9", "unrelated": "x"})
    lookup = airflow_variable_lookup(api, FakeConf(), {"AIRFLOW_VAR_CT_SEED": "5"})
    settings = load_settings({}, variables=lookup)
    assert settings.max_depth == 9
    assert api.listed == 1
    assert sorted(api.got) == ["CT_MAX_DEPTH", "CT_SEED"]  # AIRFLOW_VAR_CT_SEED counts as existing


def test_a_custom_secrets_backend_means_every_unset_setting_is_asked():
    api = FakeVariableApi({"CT_MAX_DEPTH": "9"})
    lookup = airflow_variable_lookup(api, FakeConf("airflow.providers.hashicorp.secrets.vault.VaultBackend"), {})
    assert load_settings({"CT_SEED": "1"}, variables=lookup).max_depth == 9
    assert api.listed == 0
    assert len(api.got) == len(declared_settings()) - 1


def test_where_variables_cannot_be_listed_every_unset_setting_is_asked():
    api = FakeVariableApi({"CT_MAX_DEPTH": "9"}, listing=ImportError("no task supervisor"))
    assert load_settings({}, variables=airflow_variable_lookup(api, FakeConf(), {})).max_depth == 9
    assert api.listed == 1
    assert len(api.got) == len(declared_settings())


def test_runtime_settings_outside_a_task_reads_airflow_var_environment_variables_and_defaults(tmp_path):
    code = (
        "from include.continuous_training.config import runtime_settings\n"
        "s = runtime_settings()\n"
        "print(s.max_depth, s.seed)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "AIRFLOW_HOME": str(tmp_path)}
    env |= {"AIRFLOW_VAR_CT_MAX_DEPTH": "8", "CT_SEED": "3", "AIRFLOW_VAR_CT_SEED": "99"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["8", "3"]
    assert not (tmp_path / "airflow.db").exists()  # no metadata DB was created, let alone read


def test_runtime_settings_without_the_task_sdk_is_environment_and_defaults(monkeypatch):
    monkeypatch.setitem(sys.modules, "airflow.sdk", None)  # what `import airflow.sdk` sees where it is absent
    monkeypatch.setenv("CT_SEED", "3")
    monkeypatch.setenv("AIRFLOW_VAR_CT_MAX_DEPTH", "8")
    settings = runtime_settings()
    assert (settings.seed, settings.max_depth) == (3, 6)


def test_every_setting_is_declared_once_with_a_variable_and_a_meaning():
    declared = declared_settings()
    assert [d.name for d in declared] == [f.name for f in dataclasses.fields(Settings)]
    envs = [d.env for d in declared]
    assert len(envs) == len(set(envs)), "one variable per setting"
    assert all(re.fullmatch(r"(CT|MLFLOW)_[A-Z0-9_]+", env) for env in envs), envs
    assert all(d.doc and d.kind for d in declared)
    assert [d.name for d in declared if d.secret] == ["serving_admin_token"]


def test_every_prefix_is_a_normalised_setting():
    defaults = load_settings({})
    prefixes = {d.name: getattr(defaults, d.name) for d in declared_settings() if d.kind == "S3 prefix"}
    assert prefixes["feedback_prefix"] == "feedback/"
    assert prefixes["training_prefix"] == "training/"
    assert all(value.endswith("/") and not value.startswith("/") for value in prefixes.values())
    custom = load_settings({"CT_FEEDBACK_PREFIX": "/labels/late", "CT_TRAINING_PREFIX": "splits//"})
    assert (custom.feedback_prefix, custom.training_prefix) == ("labels/late/", "splits/")


def test_git_commit_is_a_setting():
    assert load_settings({}).git_commit == ""
    assert load_settings({"CT_GIT_COMMIT": "0123abc"}).git_commit == "0123abc"


def test_the_readme_settings_table_is_the_generated_one():
    text = README.read_text()
    assert TABLE_START in text, f"README.md needs the line {TABLE_START!r} before the table"
    assert TABLE_END in text, f"README.md needs the line {TABLE_END!r} after the table"
    in_readme = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip("\n") + "\n"
    assert in_readme == settings_table_markdown(), (
        "README.md's settings table differs from the declarations in include/continuous_training/config.py: "
        "regenerate it with `python -m include.continuous_training.config --update-readme README.md`"
    )


def test_the_table_has_one_row_per_setting_with_its_default():
    rows = settings_table_markdown().splitlines()[2:]
    assert len(rows) == len(declared_settings())
    assert "| `CT_MAX_DEPTH` | integer | `6` | XGBoost tree depth |" in rows
    assert any(row.startswith("| `CT_SERVING_ADMIN_TOKEN` | secret | empty |") for row in rows)
    assert any(row.startswith("| `CT_EXPECTATION_SUITE` | path | bundled") for row in rows)
    assert str(DEFAULT_SUITE_PATH) not in settings_table_markdown()  # nothing machine-specific


def test_the_command_line_prints_the_table_and_checks_the_environment(capsys, monkeypatch):
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out == settings_table_markdown()
    monkeypatch.setenv("CT_SERVING_ADMIN_TOKEN", "tok-0123456789")
    monkeypatch.setenv("CT_SEED", "5")
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "CT_SEED=5\n" in out
    assert "CT_SERVING_ADMIN_TOKEN=***\n" in out
    assert "tok-0123456789" not in out
    monkeypatch.setenv("CT_MAX_DEPTH", "six")
    assert main([]) == 2
    assert capsys.readouterr().out == "settings: CT_MAX_DEPTH='six': expected an integer\n"


def test_s3_uri():
    assert Settings(s3_bucket="bkt").s3_uri("curated/x.parquet") == "s3://bkt/curated/x.parquet"


def test_constructing_settings_directly_validates_too():
    with pytest.raises(SettingsError, match="CT_S3_BUCKET"):
        Settings(s3_bucket="ab")


def test_the_removed_sagemaker_target_is_refused_naming_the_setting():
    from include.continuous_training.config import SettingsError

    with pytest.raises(SettingsError, match=r"CT_DEPLOYMENT_TARGET 'sagemaker': expected one of \('local', 'none'\)"):
        load_settings({"CT_DEPLOYMENT_TARGET": "sagemaker"})


def test_a_malformed_setting_fails_a_task_at_once_without_retries():
    from airflow.sdk.exceptions import AirflowFailException

    from include.continuous_training.config import task_settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CT_MAX_DEPTH", "six")
        with pytest.raises(AirflowFailException, match="CT_MAX_DEPTH='six': expected an integer"):
            task_settings()
