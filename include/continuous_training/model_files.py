"""Model files: one small, reviewed YAML file declares one model.

A model file (``models/<name>.yaml``; the directory is ``CT_MODELS_DIR``) names the model's table (label,
optional id and event time, numeric and categorical features), its task, its Great Expectations suite,
its S3 prefixes, its registered-model name, its schedules and its gates. Each file becomes its own set of
DAGs (``ingest_new_data_<name>``, ``train_and_deploy_<name>``, ``monitor_drift_<name>``), its own Asset,
its own registry entry and its own endpoint. Deployment-wide settings (connections, URLs, secrets,
queues) stay in the environment / Airflow: a model file that sets one is refused.

Where a model's setting comes from, the first that is set wins: the environment variable (as Airflow's
own ``AIRFLOW__*`` variables win over ``airflow.cfg``: set there only what is the same for every model),
the model file, an Airflow Variable (inside tasks), the declared default.

A mistake in a file raises :class:`ModelFileError` naming the file and the field
(``models/penguins.yaml: table.label: required``) — at parse time, so the DAG file shows it as an
import error in the Airflow UI, and in ``python -m include.continuous_training check-model``.

Imported by DAG files at parse time: the standard library and PyYAML only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from include.continuous_training.config import (
    DEFAULT_MODELS_DIR,
    TASKS,
    SettingsError,
    declared_settings,
)

MODEL_NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")
DAG_SUFFIX = re.compile(r"^(_[a-z0-9_]{1,41})?$")
SCHEDULE_KEYS = ("ingest", "train", "drift")
DEFAULT_SCHEDULES = {"ingest": "0 * * * *", "train": "0 4 * * 1", "drift": "0 5 * * *"}
TOP_LEVEL_KEYS = frozenset(
    {"name", "task", "description", "table", "suite", "registered_model", "storage", "schedules", "dag_suffix"}
    | {"gates", "settings"}
)
TABLE_KEYS = frozenset({"label", "id", "event_time", "numeric", "categorical"})
# Each S3 prefix setting and its folder under the model's storage prefix.
PREFIX_FOLDERS = {
    "landing_prefix": "landing/",
    "curated_prefix": "curated/",
    "quarantine_prefix": "quarantine/",
    "manifest_prefix": "manifests/ingest/",
    "training_prefix": "training/",
    "inference_prefix": "inference/",
    "feedback_prefix": "feedback/",
    "reports_prefix": "reports/",
    "serving_state_prefix": "serving/",
    "audit_prefix": "audit/",
    "dataset_prefix": "datasets/",
}
# The same for every model of a deployment: these stay in the environment / Airflow.
DEPLOYMENT_WIDE = frozenset(
    {
        "CT_MODEL",
        "CT_MODELS_DIR",
        "CT_S3_BUCKET",
        "CT_AWS_CONN_ID",
        "CT_S3_ENDPOINT_URL",
        "MLFLOW_TRACKING_URI",
        "CT_SERVING_ADMIN_TOKEN",
        "CT_ALERT_WEBHOOK_URL",
        "CT_GPU_QUEUE",
        "CT_GPU_POOL",
        "CT_GIT_COMMIT",
    }
)
# Settings a model file sets through its own fields, not under ``settings:``.
SET_BY_FIELD = {
    "CT_TASK": "task",
    "CT_LABEL_COLUMN": "table.label",
    "CT_ID_COLUMN": "table.id",
    "CT_TIMESTAMP_COLUMN": "table.event_time",
    "CT_NUMERIC_COLUMNS": "table.numeric",
    "CT_CATEGORICAL_COLUMNS": "table.categorical",
    "CT_EXPECTATION_SUITE": "suite",
    "CT_MODEL_NAME": "registered_model",
    **{f"CT_{name.upper()}": "storage.prefix" for name in PREFIX_FOLDERS},
    "CT_MANIFEST_PREFIX": "storage.prefix",
}


class ModelFileError(SettingsError):
    """A model file is malformed or contradicts another: fix the file; retrying cannot help."""


@dataclass(frozen=True)
class ModelFile:
    """One model file, checked: what the DAG factories and :func:`config.load_settings` use."""

    name: str
    path: Path
    task: str
    description: str
    dag_suffix: str
    schedules: Mapping[str, str]
    # Settings field -> raw text, parsed (and checked) by config.load_settings like an environment value.
    values: Mapping[str, str] = field(repr=False)

    def dag_id(self, stem: str) -> str:
        """The DAG id of this model's ``stem`` DAG (``train_and_deploy`` → ``train_and_deploy_penguins``)."""
        return f"{stem}{self.dag_suffix}"

    @property
    def asset_name(self) -> str:
        """Name of the Asset ``ingest_new_data`` updates and ``train_and_deploy`` schedules on."""
        return f"curated_batches{self.dag_suffix}"

    @property
    def tag(self) -> str:
        """The DAG tag every DAG of this model carries (filter by model in the Airflow UI)."""
        return f"model:{self.name}"


def _fail(path: Path, where: str, message: str) -> ModelFileError:
    return ModelFileError(f"{path}: {where}: {message}" if where else f"{path}: {message}")


def _text(path: Path, where: str, value: Any, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str) or not value.strip():
        expected = "a non-empty string or null" if optional else "a non-empty string"
        raise _fail(path, where, f"expected {expected}, got {value!r}")
    return value.strip()


def _column_list(path: Path, where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(path, where, f"expected a list of column names (may be empty: []), got {value!r}")
    columns = [v.strip() for v in value]
    for column in columns:
        if "," in column:
            raise _fail(path, where, f"column name {column!r} contains a comma")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise _fail(path, where, f"listed twice: {duplicated}")
    return columns


def _mapping(path: Path, where: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, where, f"expected a mapping, got {type(value).__name__}")
    return value


def _unknown(path: Path, where: str, keys: Iterable[str], allowed: Iterable[str]) -> None:
    import difflib

    allowed = sorted(allowed)
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {allowed}"
            raise _fail(path, f"{where}{key}", f"unknown field{hint}")


def _raw(path: Path, where: str, value: Any) -> str:
    """A YAML scalar or list as the text an environment variable would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(_column_list(path, where, value))
    raise _fail(path, where, f"expected a scalar or a list of names, got {type(value).__name__}")


def _settings_section(path: Path, section: str, raw: Any) -> dict[str, str]:
    """``gates:`` / ``settings:`` → Settings field -> raw text; refuses deployment-wide and unknown names."""
    by_env = {declared.env: declared for declared in declared_settings()}
    values: dict[str, str] = {}
    for env, value in _mapping(path, section, raw).items():
        where = f"{section}.{env}"
        if env in DEPLOYMENT_WIDE:
            raise _fail(path, where, "deployment-wide: set it in the environment or as an Airflow Variable")
        if env in SET_BY_FIELD:
            raise _fail(path, where, f"set it with the model file's `{SET_BY_FIELD[env]}` field")
        if env not in by_env:
            _unknown(path, f"{section}.", [env], [e for e in by_env if e not in DEPLOYMENT_WIDE | SET_BY_FIELD.keys()])
        declared = by_env[env]
        text = _raw(path, where, value)
        try:
            declared.parse(text)  # fails here, naming the file, rather than in the first task
        except ValueError as error:
            raise _fail(path, where, f"{text!r}: {error}") from None
        values[declared.name] = text
    return values


def parse_model_file(path: Path, document: Any) -> ModelFile:
    """Check one model file's parsed YAML ``document`` and turn it into a :class:`ModelFile`."""
    if not isinstance(document, dict):
        raise _fail(path, "", "expected a mapping at the top level (name:, task:, table:, suite:, ...)")
    _unknown(path, "", document, TOP_LEVEL_KEYS)
    for required in ("name", "task", "table", "suite"):
        if required not in document:
            raise _fail(path, required, "required")
    name = _text(path, "name", document["name"])
    if not MODEL_NAME.match(name):
        raise _fail(path, "name", f"{name!r}: lowercase letters, digits and _, starting with a letter (2-41)")
    if path.stem != name:
        raise _fail(path, "name", f"{name!r} must match the file name ({path.stem!r})")
    task = _text(path, "task", document["task"])
    if task not in TASKS:
        raise _fail(path, "task", f"{task!r}: expected one of {TASKS}")

    table = _mapping(path, "table", document["table"])
    _unknown(path, "table.", table, TABLE_KEYS)
    for required in ("label", "numeric", "categorical"):
        if required not in table:
            raise _fail(
                path, f"table.{required}", "required" + (" (may be an empty list: [])" if required != "label" else "")
            )
    label = _text(path, "table.label", table["label"])
    id_column = _text(path, "table.id", table.get("id"), optional=True)
    event_time = _text(path, "table.event_time", table.get("event_time"), optional=True)
    numeric = _column_list(path, "table.numeric", table["numeric"])
    categorical = _column_list(path, "table.categorical", table["categorical"])
    if not numeric and not categorical:
        raise _fail(path, "table", "no features: list at least one column under numeric or categorical")
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise _fail(path, "table", f"listed as both numeric and categorical: {both}")
    for where, column in (("table.label", label), ("table.id", id_column), ("table.event_time", event_time)):
        if column and column in (*numeric, *categorical):
            raise _fail(path, where, f"{column!r} is also listed as a feature")

    suite = path.parent / _text(path, "suite", document["suite"])
    if not suite.is_file():
        raise _fail(path, "suite", f"no such file: {suite}")

    values: dict[str, str] = {
        "task": task,
        "label_column": label,
        "id_column": id_column,
        "timestamp_column": event_time,
        "numeric_columns": ",".join(numeric),
        "categorical_columns": ",".join(categorical),
        "expectation_suite_path": str(suite.resolve()),
        "model_name": _text(path, "registered_model", document.get("registered_model", f"ct-{name}")),
        "mlflow_experiment": f"continuous-training-{name}",
        "slice_column": "",  # the bundled default names a column of the card-transaction table
    }
    storage = _mapping(path, "storage", document.get("storage"))
    _unknown(path, "storage.", storage, {"prefix"})
    prefix = storage.get("prefix", f"{name}/")
    if prefix is None or not isinstance(prefix, str):
        raise _fail(path, "storage.prefix", f'expected a string ("" for the environment\'s prefixes), got {prefix!r}')
    if prefix.strip("/"):
        for setting, folder in PREFIX_FOLDERS.items():
            values[setting] = f"{prefix.strip('/')}/{folder}"

    schedules = dict(DEFAULT_SCHEDULES)
    raw_schedules = _mapping(path, "schedules", document.get("schedules"))
    _unknown(path, "schedules.", raw_schedules, SCHEDULE_KEYS)
    for key, value in raw_schedules.items():
        schedules[key] = _text(path, f"schedules.{key}", value)

    suffix = document.get("dag_suffix", f"_{name}")
    if not isinstance(suffix, str) or not DAG_SUFFIX.match(suffix):
        raise _fail(path, "dag_suffix", f"{suffix!r}: empty, or _ followed by lowercase letters, digits and _")

    for section in ("gates", "settings"):
        values.update(_settings_section(path, section, document.get(section)))
    description = document.get("description") or ""
    if not isinstance(description, str):
        raise _fail(path, "description", f"expected a string, got {type(description).__name__}")
    return ModelFile(name, path, task, description.strip(), suffix, schedules, values)


def load_model_file(path: Path | str) -> ModelFile:
    """Read and check one model file; :class:`ModelFileError` names the file and the field."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        # The C loader when PyYAML was built with libyaml (about 10x faster), else the pure-Python one.
        loader = yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader
        document = yaml.load(text, Loader=loader)  # noqa: S506  # nosec B506
    except yaml.YAMLError as error:
        raise ModelFileError(f"{path}: not valid YAML: {error}") from None
    return parse_model_file(path, document)


def model_file_paths(directory: Path | str | None = None) -> list[Path]:
    """The model files in ``directory`` (default ``CT_MODELS_DIR``), sorted by name."""
    directory = Path(directory) if directory is not None else models_dir()
    if not directory.is_dir():
        return []
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def models_dir() -> Path:
    """``CT_MODELS_DIR`` from the environment, else ``models/`` at the project root."""
    import os

    return Path(os.environ.get("CT_MODELS_DIR") or DEFAULT_MODELS_DIR)


def discover_model_files(directory: Path | str | None = None) -> list[ModelFile]:
    """Every model file in ``directory``, checked one by one and against each other.

    Two files may not share a name, DAG ids, a registered model or an S3 prefix: they would read
    each other's data or move each other's aliases.
    """
    models = [load_model_file(path) for path in model_file_paths(directory)]
    seen: dict[tuple[str, str], Path] = {}
    for model in models:
        claims = {
            ("name", model.name),
            ("DAG suffix", model.dag_suffix),
            ("registered model", model.values["model_name"]),
            ("curated prefix", model.values.get("curated_prefix", "")),
        }
        for claim in sorted(claims):
            other = seen.setdefault(claim, model.path)
            if other != model.path:
                raise ModelFileError(f"{model.path}: same {claim[0]} {claim[1]!r} as {other}")
    return models


def models_to_build(stem: str, directory: Path | str | None = None) -> list[ModelFile]:
    """The model files whose ``stem`` DAG this parse builds: every one, except when a worker parses the
    DAG file to run one task (Airflow's parsing context names that DAG): then only that DAG's model,
    as Airflow's docs advise for generated DAGs. Every file is still checked."""
    from airflow.sdk import get_parsing_context

    models = discover_model_files(directory)
    wanted = get_parsing_context().dag_id
    return models if wanted is None else [model for model in models if model.dag_id(stem) == wanted]


def find_model_file(name: str, directory: Path | str | None = None) -> ModelFile:
    """The model file called ``name`` (``<directory>/<name>.yaml``); :class:`ModelFileError` if none."""
    directory = Path(directory) if directory is not None else models_dir()
    for suffix in (".yaml", ".yml"):
        path = directory / f"{name}{suffix}"
        if path.is_file():
            return load_model_file(path)
    known = ", ".join(p.stem for p in model_file_paths(directory)) or "none"
    raise ModelFileError(
        f"CT_MODEL={name!r}: no model file {directory / (name + '.yaml')} (model files there: {known})"
    )


def model_doc(model: ModelFile, doc: str | None) -> str:
    """A DAG's ``doc_md`` for ``model``: the DAG's heading, which model file and task, then the rest."""
    heading, _, rest = (doc or "").strip().partition("\n")
    about = f" — {model.description}" if model.description else ""
    return f"{heading}\n\n**Model `{model.name}`** ({model.task}; `{model.path.name}`){about}\n{rest}"
