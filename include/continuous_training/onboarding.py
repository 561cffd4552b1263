"""Onboard a table in one command: infer a model file and a suite from a sample, and check them.

``python -m include.continuous_training init-model --reference FILE --label COLUMN --name NAME``
reads a CSV or Parquet sample the way ingest reads a landing object (:func:`validation.read_batch`),
decides what each column is, writes ``models/NAME.yaml`` (the model file, with a comment on every
choice) and ``models/NAME.suite.json`` (:func:`validation.build_suite_from_reference`), then
validates the sample with that suite, as ingest would. ``check-model NAME [--sample FILE]`` names
every mismatch between the model file, its suite and a sample.

How a column is classified (first rule that applies):

- the ``--label`` column is the label; the task is ``--task`` or inferred from it: two values →
  binary; numbers with more than :data:`MAX_INFERRED_CLASSES` values, or fractional numbers with
  more than two → regression; otherwise (text, or a few whole numbers) → multiclass;
- all-null, or a single value → **ignored** (nothing to learn);
- ``--id`` / ``--event-time`` name the id and event-time columns when given;
- datetimes (naive or time-zone aware) and text whose every value parses as an ISO 8601 date → the
  event time when it is the only one (or ``--event-time``); any other datetime column is ignored;
- booleans (``bool``, nullable ``boolean``, ``True``/``False`` text from CSV) → **numeric**: ingest
  and the suite builder read a boolean numeric feature as 0/1 (:func:`validation.normalise_columns`);
- numbers (ints, floats, nullable ``Int64``) → **numeric**, except an integer column unique per row
  with an id-like name (``id``, ``*_id``, ``customerId``, ``uuid``) → the id, and an integer column
  that counts the rows (0..n-1, a saved index) → ignored (it restarts in every batch);
- text (``object`` strings, pandas ``category``, Arrow dictionaries): unique per row and either
  id-like by name or single tokens without spaces → the id; nearly all distinct
  (:data:`FREE_TEXT_DISTINCT_SHARE`) with spaces → free text, ignored; more than
  :data:`MAX_CATEGORIES` values → high cardinality, ignored; else **categorical**;
- anything else (lists, bytes, mixed types) → ignored.

One id at most: the id-like name wins among several candidates; the others are ignored. Ignored
columns stay in the suite's column set (a batch must still have them, so a renamed column is
caught) with no other expectation, and are listed in the suite's ``meta.ignored_columns``, which
``check-model`` reads.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.continuous_training.config import (
    DEFAULT_MODELS_DIR,
    DERIVED_EVENT_TIME_COLUMN,
    DERIVED_ID_COLUMN,
    TASKS,
    Settings,
    SettingsError,
    declared_settings,
    load_settings,
)
from include.continuous_training.errors import ConfigurationError
from include.continuous_training.model_files import MODEL_NAME, SET_BY_FIELD, ModelFile, load_model_file

if TYPE_CHECKING:
    import pandas as pd

MAX_CATEGORIES = 100  # a text column with more distinct values is not a useful categorical feature
FREE_TEXT_DISTINCT_SHARE = 0.9  # text with spaces and at least this share of distinct values is free text
MAX_INFERRED_CLASSES = 20  # a numeric label with more distinct values is inferred to be a regression target
MAX_CLASSES = 50  # a text label with more distinct values is not inferred to be multiclass
ID_NAME = re.compile(r"(^|[_\-\s.])(id|uuid|guid)$", re.IGNORECASE)
CAMEL_ID_NAME = re.compile(r"[a-z0-9]Id$")
# The settings a model file decides; the environment's values for them are not used for a model.
TABLE_VARIABLES = frozenset(
    {
        "CT_TASK",
        "CT_LABEL_COLUMN",
        "CT_ID_COLUMN",
        "CT_TIMESTAMP_COLUMN",
        "CT_NUMERIC_COLUMNS",
        "CT_CATEGORICAL_COLUMNS",
        "CT_EXPECTATION_SUITE",
        "CT_SLICE_COLUMN",
    }
)
TEXT_TYPE_NAMES = frozenset({"object", "str", "string", "StringDtype", "category"})
NUMERIC_TYPE_PREFIXES = ("int", "Int", "float", "Float", "uint", "UInt")


class OnboardingError(ConfigurationError):
    """A sample, a model file or its suite cannot be used as given; the message names what and where."""


# -- deciding what each column is ------------------------------------------------------------------
@dataclass(frozen=True)
class ColumnDecision:
    """What one column of the sample became, and why (one printed line)."""

    column: str
    kind: str  # label | numeric | categorical | id | event_time | ignored
    reason: str

    def line(self) -> str:
        return f"{self.column}: {self.kind.replace('_', ' ')} ({self.reason})"


@dataclass(frozen=True)
class TableModel:
    """The model a sample implies: task, label, id, event time and features, each with its reason."""

    name: str
    task: str
    task_reason: str
    label: str
    id_column: str | None
    id_reason: str
    event_time: str | None
    event_time_reason: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    ignored: tuple[str, ...]
    decisions: tuple[ColumnDecision, ...]
    rows: int

    def summary_lines(self) -> list[str]:
        """One line per column, then the id, the event time and the task with their reasons."""
        lines = [decision.line() for decision in self.decisions]
        lines.append(f"id: {self.id_column or 'none'} ({self.id_reason})")
        lines.append(f"event time: {self.event_time or 'none'} ({self.event_time_reason})")
        lines.append(f"task: {self.task} ({self.task_reason})")
        return lines


def infer_table_model(
    frame: pd.DataFrame,
    label: str,
    name: str,
    task: str | None = None,
    id_column: str | None = None,
    event_time: str | None = None,
) -> TableModel:
    """Decide what each column of ``frame`` is (see the module docstring for the rules).

    Raises :class:`OnboardingError` when the label, ``id_column`` or ``event_time`` is not a column,
    when ``task`` is not one of :data:`TASKS`, or when the label cannot serve that task.
    """
    import pandas as pd

    _check_name(name)
    columns = [str(c) for c in frame.columns]
    for option, column in (("--label", label), ("--id", id_column), ("--event-time", event_time)):
        if column is not None and column not in columns:
            raise OnboardingError(f"{option} {column!r} is not a column of the sample; its columns: {columns}")
    if task is not None and task not in TASKS:
        raise OnboardingError(f"--task {task!r}: expected one of {TASKS}")
    chosen_task, task_reason = _label_task(frame[label], task)

    decisions = {label: ColumnDecision(label, "label", f"{_describe(frame[label])}; {chosen_task}")}
    id_candidates: list[tuple[bool, str, str]] = []  # (id-like name, column, reason)
    datetimes: list[tuple[str, str]] = []
    for column in columns:
        if column == label:
            continue
        values = frame[column]
        present = values.dropna()
        described = _describe(values)
        if column == id_column:
            if present.nunique() != len(values):
                raise OnboardingError(f"--id {column!r} is not unique per row and non-null ({described})")
            decisions[column] = ColumnDecision(column, "id", f"--id, {described}")
        elif present.empty:
            decisions[column] = ColumnDecision(column, "ignored", "all null")
        elif column == event_time:
            if not _is_datetime(values):
                raise OnboardingError(f"--event-time {column!r} is not a datetime column ({described})")
            decisions[column] = ColumnDecision(column, "event_time", f"--event-time, {described}")
        elif present.nunique() == 1:
            decisions[column] = ColumnDecision(column, "ignored", f"constant: one value, {present.iloc[0]!r}")
        elif _is_datetime(values):
            datetimes.append((column, described))
        elif pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.infer_dtype(present) == "boolean":
            decisions[column] = ColumnDecision(column, "numeric", f"{described}; a boolean, read as 0/1")
        elif _is_text_like(values):
            kind, reason = _text_kind(column, values, described)
            if kind == "id":
                id_candidates.append((_id_like_name(column), column, reason))
            else:
                decisions[column] = ColumnDecision(column, kind, reason)
        elif pd.api.types.is_numeric_dtype(values.dtype):
            kind, reason = _numeric_kind(column, values, described)
            if kind == "id":
                id_candidates.append((True, column, reason))
            else:
                decisions[column] = ColumnDecision(column, kind, reason)
        else:
            decisions[column] = ColumnDecision(column, "ignored", f"{described}: not a type a feature can have")

    chosen_id, id_reason = _choose_id(id_column, id_candidates, decisions)
    chosen_time, time_reason = _choose_event_time(event_time, datetimes, decisions)
    ordered = tuple(decisions[c] for c in columns)
    if not any(d.kind in ("numeric", "categorical") for d in ordered):
        raise OnboardingError(
            "no feature column: " + "; ".join(d.line() for d in ordered if d.kind != "label") + " (a model needs one)"
        )
    return TableModel(
        name=name,
        task=chosen_task,
        task_reason=task_reason,
        label=label,
        id_column=chosen_id,
        id_reason=id_reason,
        event_time=chosen_time,
        event_time_reason=time_reason,
        numeric=tuple(d.column for d in ordered if d.kind == "numeric"),
        categorical=tuple(d.column for d in ordered if d.kind == "categorical"),
        ignored=tuple(d.column for d in ordered if d.kind == "ignored"),
        decisions=ordered,
        rows=len(frame),
    )


def _check_name(name: str) -> None:
    if not MODEL_NAME.match(name):
        raise OnboardingError(
            f"model name {name!r}: expected [a-z][a-z0-9_]{{1,40}} (it names the DAGs, the registered model, the files)"
        )


def _describe(values: pd.Series) -> str:
    import pandas as pd

    present = values.dropna()
    if isinstance(values.dtype, pd.CategoricalDtype):
        kind = "pandas category"
    elif isinstance(values.dtype, pd.ArrowDtype):
        import pyarrow as pa

        kind = "Arrow dictionary" if pa.types.is_dictionary(values.dtype.pyarrow_dtype) else f"Arrow {values.dtype}"
    elif pd.api.types.is_object_dtype(values.dtype):
        kind = f"object {pd.api.types.infer_dtype(present)}"
    else:
        kind = str(values.dtype)
    nulls = int(values.isna().sum())
    return f"{kind}, {present.nunique()} values" + (f", {nulls} nulls" if nulls else "")


def _label_task(label: pd.Series, task: str | None) -> tuple[str, str]:
    """The task for this label (``task`` when given, checked) and why, or :class:`OnboardingError`."""
    import pandas as pd

    present = label.dropna()
    distinct = int(present.nunique())
    numeric = pd.api.types.is_numeric_dtype(label.dtype) and not pd.api.types.is_bool_dtype(label.dtype)
    shown = ", ".join(str(v) for v in sorted(present.unique(), key=str)[:5]) + (", ..." if distinct > 5 else "")
    fractional = numeric and bool((present.astype(float) % 1 != 0).any())
    if distinct < 2:
        raise OnboardingError(f"label {label.name!r} has {distinct} distinct value(s) ({shown}): nothing to learn")
    if task == "regression" and not numeric:
        raise OnboardingError(f"--task regression: label {label.name!r} is not numeric ({label.dtype})")
    if task == "binary" and distinct != 2:
        raise OnboardingError(f"--task binary: label {label.name!r} has {distinct} values, not two ({shown})")
    if task is not None:
        return task, f"--task; label {label.name!r}: {distinct} values ({shown})"
    if distinct == 2:
        return "binary", f"label {label.name!r} has two values: {shown}"
    if numeric and (distinct > MAX_INFERRED_CLASSES or fractional):
        why = "fractional values" if fractional else f"over {MAX_INFERRED_CLASSES}"
        return "regression", f"label {label.name!r} is numeric with {distinct} distinct values ({why})"
    if distinct > MAX_CLASSES:
        raise OnboardingError(
            f"label {label.name!r} is text with {distinct} distinct values (over {MAX_CLASSES}): "
            "pass --task multiclass if you mean it"
        )
    return "multiclass", f"label {label.name!r} has {distinct} classes: {shown}"


def _is_datetime(values: pd.Series) -> bool:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return True
    if not _is_text_like(values) or isinstance(values.dtype, pd.CategoricalDtype):
        return False
    present = values.dropna().astype(str)
    if present.empty or not present.str.contains(r"\d{4}-\d{2}-\d{2}", regex=True).all():
        return False
    parsed = pd.to_datetime(present, utc=True, errors="coerce", format="ISO8601")  # as read_batch parses
    return bool(parsed.notna().all())


def _is_text_like(values: pd.Series) -> bool:
    import pandas as pd
    import pyarrow as pa

    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return True
    if isinstance(dtype, pd.ArrowDtype):
        arrow = dtype.pyarrow_dtype
        arrow = arrow.value_type if pa.types.is_dictionary(arrow) else arrow
        return bool(pa.types.is_string(arrow) or pa.types.is_large_string(arrow))
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return True
    return pd.api.types.is_object_dtype(dtype) and pd.api.types.infer_dtype(values, skipna=True) == "string"


def _id_like_name(column: str) -> bool:
    return bool(ID_NAME.search(column) or CAMEL_ID_NAME.search(column))


def _text_kind(column: str, values: pd.Series, described: str) -> tuple[str, str]:
    import pandas as pd

    present = values.dropna().astype(str)
    distinct = int(present.nunique())
    declared = isinstance(values.dtype, pd.CategoricalDtype) or "dictionary" in described
    unique_per_row = distinct == len(values)
    spaced = bool(present.str.contains(r"\s", regex=True).mean() > 0.5)
    if unique_per_row and (_id_like_name(column) or not spaced):
        return "id", f"{described}: unique per row" + (", id-like name" if _id_like_name(column) else "")
    if declared and distinct <= MAX_CATEGORIES:
        return "categorical", described
    if spaced and distinct >= FREE_TEXT_DISTINCT_SHARE * len(present):
        return "ignored", f"{described}: free text, nearly every value distinct"
    if distinct > MAX_CATEGORIES:
        return "ignored", f"{described}: high cardinality, over {MAX_CATEGORIES} values"
    return "categorical", described


def _numeric_kind(column: str, values: pd.Series, described: str) -> tuple[str, str]:
    import pandas as pd

    present = values.dropna()
    integer = pd.api.types.is_integer_dtype(values.dtype)
    if integer and present.nunique() == len(values):
        if _id_like_name(column):
            return "id", f"{described}: unique per row, id-like name"
        ordered = present.sort_values().to_numpy()
        if int(ordered[-1]) - int(ordered[0]) == len(values) - 1 and int(ordered[0]) in (0, 1):
            return "ignored", f"{described}: counts the rows ({ordered[0]}..{ordered[-1]}), restarts in every batch"
    return "numeric", described


def _choose_id(
    given: str | None, candidates: list[tuple[bool, str, str]], decisions: dict[str, ColumnDecision]
) -> tuple[str | None, str]:
    if given is not None:
        for _, column, reason in candidates:
            decisions[column] = ColumnDecision(column, "ignored", f"{reason}; --id is {given!r}")
        return given, "--id"
    if not candidates:
        return None, f"no column is unique per row with an id-like name or values: ingest derives {DERIVED_ID_COLUMN}"
    ranked = sorted(candidates, key=lambda c: not c[0])  # id-like names first, then the sample's order
    chosen = ranked[0][1]
    for _, column, reason in ranked:
        kind = "id" if column == chosen else "ignored"
        decisions[column] = ColumnDecision(column, kind, reason if kind == "id" else f"{reason}; the id is {chosen!r}")
    others = [c for _, c, _ in ranked[1:]]
    return chosen, "unique per row" + (f"; also unique, ignored: {others} (--id to choose)" if others else "")


def _choose_event_time(
    given: str | None, datetimes: list[tuple[str, str]], decisions: dict[str, ColumnDecision]
) -> tuple[str | None, str]:
    names = [c for c, _ in datetimes]
    if given is not None:
        chosen: str | None = given
        reason = "--event-time"
    elif len(datetimes) == 1:
        chosen, reason = names[0], "the only datetime column"
    elif not datetimes:
        chosen = None
        reason = f"no datetime column: ingest records the ingest time as {DERIVED_EVENT_TIME_COLUMN}"
    else:
        chosen = None
        reason = (
            f"{len(names)} datetime columns {names}: none chosen, pass --event-time; "
            f"until then ingest records the ingest time as {DERIVED_EVENT_TIME_COLUMN}"
        )
    for column, described in datetimes:
        if column == chosen:
            decisions[column] = ColumnDecision(column, "event_time", f"{described}, {reason}")
        else:
            decisions[column] = ColumnDecision(column, "ignored", f"{described}: a datetime, not the event time")
    return chosen, reason


# -- settings for a model ----------------------------------------------------------------------
def table_settings(model: TableModel, suite_path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings a new model's suite is built with: the environment's, with the model's table.

    The environment's table variables (``CT_LABEL_COLUMN``, ...) and ``CT_MODEL`` are left out: they
    describe another table. No slice column (a model file sets one under ``gates``). Once written, the
    model file is read by :func:`config.load_settings` (``model=``), like every other.
    """
    env = os.environ if environ is None else environ
    others = {key: value for key, value in env.items() if key not in TABLE_VARIABLES and key != "CT_MODEL"}
    return replace(
        load_settings(environ=others),
        task=model.task,
        label_column=model.label,
        id_column=model.id_column or "",
        timestamp_column=model.event_time or "",
        numeric_columns=model.numeric,
        categorical_columns=model.categorical,
        expectation_suite_path=suite_path,
        slice_column="",
    )


def environment_overrides(model: ModelFile, settings: Settings) -> list[str]:
    """The model file's table, task and suite settings that the environment overrides, one line each.

    The environment wins over a model file (:func:`config.load_settings`): a ``CT_LABEL_COLUMN`` left
    in a shell for another table would silently replace this model's label.
    """
    lines = []
    for declared in declared_settings():
        if declared.env not in TABLE_VARIABLES or declared.name not in model.values:
            continue
        wanted, actual = declared.parse(model.values[declared.name]), getattr(settings, declared.name)
        if isinstance(wanted, Path):
            wanted, actual = wanted.resolve(), Path(actual).resolve()
        if wanted != actual:
            field_name = SET_BY_FIELD.get(declared.env, f"gates.{declared.env}")
            lines.append(
                f"{model.path}: {field_name}: the environment's {declared.env}={getattr(settings, declared.name)!r} "
                f"wins over the model file's {model.values[declared.name]!r}"
            )
    return lines


def models_directory(directory: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """``directory``, else ``CT_MODELS_DIR``, else ``models/`` at the project root."""
    env = os.environ if environ is None else environ
    return Path(directory or env.get("CT_MODELS_DIR") or DEFAULT_MODELS_DIR)


# -- init-model ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class InitResult:
    """What ``init-model`` wrote and what the check of the sample against the new suite found."""

    model: TableModel
    model_path: Path
    suite_path: Path
    expectations: int
    self_check: list[str]  # failures of the sample against its own suite (empty: none)
    overridden: list[str] = field(default_factory=list)  # table settings this environment would override

    def report_lines(self) -> list[str]:
        lines = self.model.summary_lines()
        lines.append(f"wrote {self.model_path}")
        lines.append(f"wrote {self.suite_path} ({self.expectations} expectations)")
        if self.self_check:
            lines.append("the suite REJECTS its own sample; review it:")
            lines.extend(f"  {problem}" for problem in self.self_check)
        else:
            lines.append(f"the suite validates the sample: {self.model.rows} rows, 0 failed expectations")
        lines.extend(f"warning: {line}" for line in self.overridden)
        return lines


def init_model(
    reference: Path,
    label: str,
    name: str,
    task: str | None = None,
    id_column: str | None = None,
    event_time: str | None = None,
    models_dir: Path | str | None = None,
    force: bool = False,
    environ: Mapping[str, str] | None = None,
) -> InitResult:
    """Infer the model of ``reference``, write ``NAME.yaml`` and ``NAME.suite.json``, and check the sample.

    The sample is read as ingest reads a landing object; the suite is built from it with the
    model's settings and must then validate it (``InitResult.self_check`` lists what it rejected).
    Raises :class:`OnboardingError` when a file exists (unless ``force``) or the sample cannot serve.
    """
    from include.continuous_training.validation import build_suite_from_reference

    directory = models_directory(models_dir, environ)
    model_path, suite_path = directory / f"{name}.yaml", directory / f"{name}.suite.json"
    _check_name(name)
    existing = [str(p) for p in (model_path, suite_path) if p.exists()]
    if existing and not force:
        raise OnboardingError(f"{', '.join(existing)} already exist: nothing written (--force replaces them)")
    raw = read_sample(reference, Settings(timestamp_column=""))
    model = infer_table_model(raw, label, name, task=task, id_column=id_column, event_time=event_time)
    settings = table_settings(model, suite_path, environ)
    frame = read_sample(reference, settings)  # as ingest will read it: the event time normalised to UTC
    suite = build_suite_from_reference(frame, settings, name=name)
    ignored = set(model.ignored)
    suite["expectations"] = [e for e in suite["expectations"] if e["kwargs"].get("column") not in ignored]
    suite["meta"].update(
        ignored_columns=list(model.ignored),
        notes=(
            f"Written by init-model from {reference.name} ({model.rows} rows) on {datetime.now(UTC):%Y-%m-%d}. "
            "Ignored columns are in the column set only (meta.ignored_columns). Review, then bump "
            "meta.version on every change: every ingest report records it."
        ),
    )
    directory.mkdir(parents=True, exist_ok=True)
    suite_path.write_text(json.dumps(suite, indent=2) + "\n")
    model_path.write_text(model_file_text(model, reference, suite_path.name))
    # Read back as the DAGs will read it (config.load_settings), but without this shell's table variables.
    written = load_model_file(model_path)
    env = os.environ if environ is None else environ
    others = {key: value for key, value in env.items() if key not in TABLE_VARIABLES and key != "CT_MODEL"}
    problems = sample_problems(frame, reference.name, load_settings(environ=others, model=written))
    overridden = environment_overrides(written, load_settings(environ=env, model=written))
    return InitResult(model, model_path, suite_path, len(suite["expectations"]), problems, overridden)


def read_sample(path: Path, settings: Settings) -> pd.DataFrame:
    """A CSV or Parquet file read as ingest reads a landing object (:func:`validation.read_batch`)."""
    from include.continuous_training.validation import UnreadableBatchError, read_batch

    try:
        return read_batch(path.read_bytes(), path.name, settings)
    except (OSError, UnreadableBatchError) as error:
        raise OnboardingError(f"{path}: {error}") from error


def _yaml_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"  # JSON strings are YAML: names with spaces, colons


def model_file_text(model: TableModel, reference: Path, suite_file: str) -> str:
    """The model file for ``model``, as YAML text with a comment on every choice."""
    why = {d.column: d for d in model.decisions}
    lines = [
        f"# {model.name}.yaml: written by `python -m include.continuous_training init-model` from",
        f"# {reference.name} ({model.rows} rows) on {datetime.now(UTC):%Y-%m-%d}. Review every choice, then",
        f"# commit this file and {suite_file}; `check-model {model.name} --sample FILE` checks them.",
        f"name: {model.name}",
        f"# {model.task_reason}",
        f"task: {model.task}",
        f"description: {json.dumps(f'{model.label} from {reference.name}')}",
        "table:",
        f"  label: {json.dumps(model.label)}",
        f"  # {model.id_reason}",
        f"  id: {json.dumps(model.id_column) if model.id_column else 'null'}",
        f"  # {model.event_time_reason}",
        f"  event_time: {json.dumps(model.event_time) if model.event_time else 'null'}",
    ]
    for key, columns in (("numeric", model.numeric), ("categorical", model.categorical)):
        lines.extend(f"  #   {why[c].line()}" for c in columns)
        lines.append(f"  {key}: {_yaml_list(columns)}")
    if model.ignored:
        lines.append("  # not features (in the suite's column set only, meta.ignored_columns):")
        lines.extend(f"  #   {why[c].line()}" for c in model.ignored)
    lines.append(f"suite: {json.dumps(suite_file)}   # a Great Expectations suite built from the sample")
    lines.append(f"# registered_model: ct-{model.name}   # the default")
    if model.categorical:
        lines.append("# gates:                       # compare the challenger per value of a categorical feature:")
        lines.append(f"#   CT_SLICE_COLUMN: {json.dumps(model.categorical[0])}")
    return "\n".join(lines) + "\n"


# -- check-model ---------------------------------------------------------------------------------
@dataclass
class ModelCheck:
    """The problems ``check-model`` found (each one printed line) and what it looked at."""

    model_path: Path
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_model(
    name: str,
    sample: Path | None = None,
    models_dir: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ModelCheck:
    """Every mismatch between the model file ``NAME.yaml``, its suite and (optionally) a sample.

    It names: a model file that does not load (the field and the file); a configured column the suite
    does not know or checks as another kind; a suite column that is neither a feature nor the label,
    id or event time (nor in ``meta.ignored_columns``); a ``CT_SLICE_COLUMN`` that is not a categorical
    feature; and, for the sample, a configured column it lacks, a column the suite does not know, a
    label that does not fit the task, and each expectation ingest would fail on it.
    """
    from include.continuous_training.validation import load_suite

    path = models_directory(models_dir, environ) / f"{name}.yaml"
    check = ModelCheck(path)
    try:
        model = load_model_file(path)
    except SettingsError as error:  # ModelFileError: the file and the field
        check.problems.append(str(error))
        return check
    try:
        _, info = load_suite(Path(model.values["expectation_suite_path"]))
    except (OSError, ValueError, KeyError) as error:
        check.problems.append(f"{path}: suite: does not load ({error})")
        return check
    suite_path = Path(model.values["expectation_suite_path"])
    raw_suite = json.loads(suite_path.read_bytes())
    check.checked.append(
        f"suite {suite_path.name} v{info.version}: {len(raw_suite.get('expectations', []))} expectations"
    )
    slice_column = model.values.get("slice_column", "")
    categorical = [c for c in model.values.get("categorical_columns", "").split(",") if c]
    if slice_column and slice_column not in categorical:
        check.problems.append(
            f"{path}: gates.CT_SLICE_COLUMN {slice_column!r} is not a categorical feature "
            f"(table.categorical: {categorical})"
        )
        model = replace(model, values={**model.values, "slice_column": ""})  # the other checks go on
    try:
        settings = load_settings(environ=environ, model=model)
    except SettingsError as error:
        check.problems.append(str(error) if str(error).startswith(str(path)) else f"{path}: {error}")
        return check
    check.problems.extend(environment_overrides(model, settings))
    check.problems.extend(suite_problems(path, settings, raw_suite, suite_path.name))
    if sample is not None:
        try:
            frame = read_sample(sample, settings)
        except OnboardingError as error:
            check.problems.append(f"sample {error}")
            return check
        check.checked.append(f"sample {sample.name}: {len(frame)} rows")
        check.problems.extend(sample_problems(frame, sample.name, settings, raw_suite))
    return check


def _suite_columns(raw_suite: Mapping[str, Any]) -> tuple[list[str] | None, dict[str, list[dict[str, Any]]]]:
    column_set: list[str] | None = None
    per_column: dict[str, list[dict[str, Any]]] = {}
    for expectation in raw_suite.get("expectations", []):
        kwargs = expectation.get("kwargs", {})
        if expectation.get("type") == "expect_table_columns_to_match_set":
            column_set = [str(c) for c in kwargs.get("column_set", [])]
        if "column" in kwargs:
            per_column.setdefault(str(kwargs["column"]), []).append(expectation)
    return column_set, per_column


def _type_list(expectations: list[dict[str, Any]]) -> list[str] | None:
    for expectation in expectations:
        if expectation.get("type") == "expect_column_values_to_be_in_type_list":
            return [str(t) for t in expectation["kwargs"].get("type_list", [])]
    return None


def suite_problems(model_path: Path, settings: Settings, raw_suite: Mapping[str, Any], suite_name: str) -> list[str]:
    """Mismatches between a model's table (its ``settings``) and its suite, one line each."""
    column_set, per_column = _suite_columns(raw_suite)
    known = set(column_set) if column_set is not None else set(per_column)
    ignored = set((raw_suite.get("meta") or {}).get("ignored_columns") or [])
    task, label = settings.task, settings.label_column
    roles: dict[str, str] = {label: "table.label"}
    for column, role in ((settings.id_column, "table.id"), (settings.timestamp_column, "table.event_time")):
        if column:
            roles[column] = role
    roles.update(dict.fromkeys(settings.numeric_columns, "table.numeric"))
    roles.update(dict.fromkeys(settings.categorical_columns, "table.categorical"))
    problems = []
    for column, role in roles.items():
        if column not in known:
            problems.append(
                f"{model_path}: {role} {column!r} is not a column of the suite {suite_name}: "
                "ingest would quarantine every batch that has it, and training would find no such column"
            )
    for column in sorted(known - set(roles) - ignored):
        problems.append(
            f"{suite_name}: column {column!r} is neither a feature nor the label, id or event time of "
            f"{model_path} (add it to table.numeric or table.categorical, or to the suite's meta.ignored_columns)"
        )
    for column, role in roles.items():
        types = _type_list(per_column.get(column, []))
        if types is None:
            continue
        numeric = any(t.startswith(NUMERIC_TYPE_PREFIXES) for t in types)
        text = any(t in TEXT_TYPE_NAMES for t in types)
        if (role == "table.numeric" or (role == "table.label" and task == "regression")) and not numeric:
            problems.append(
                f"{model_path}: {role} {column!r}: the suite {suite_name} accepts only {types} (no numeric type)"
            )
        if role == "table.categorical" and not text:
            problems.append(
                f"{model_path}: {role} {column!r}: the suite {suite_name} accepts only {types} (no text type)"
            )
    label_sets = [
        e["kwargs"].get("value_set")
        for e in per_column.get(label, [])
        if e.get("type") == "expect_column_values_to_be_in_set"
    ]
    for value_set in label_sets:
        if task == "binary" and len(value_set) != 2:
            problems.append(f"{suite_name}: label {label!r} allows {value_set}: a binary label has two values")
        elif task == "multiclass" and len(value_set) < 2:
            problems.append(f"{suite_name}: label {label!r} allows {value_set}: multiclass needs two or more")
    return problems


def sample_problems(
    frame: pd.DataFrame, sample_name: str, settings: Settings, raw_suite: Mapping[str, Any] | None = None
) -> list[str]:
    """Mismatches between a sample and a model's settings and suite, one line each.

    A configured column the sample lacks; a sample column the suite does not know; a label that does
    not fit ``settings.task``; every expectation ingest's validation (:func:`validation.validate_batch`)
    fails on it, and every distribution guard that fires.
    """
    import pandas as pd

    from include.continuous_training.validation import validate_batch

    if raw_suite is None:
        raw_suite = json.loads(settings.expectation_suite_path.read_bytes())
    column_set, _ = _suite_columns(raw_suite)
    configured = {settings.label_column: "label", **dict.fromkeys(settings.feature_columns, "feature")}
    configured.update(
        {c: kind for c, kind in ((settings.id_column, "id"), (settings.timestamp_column, "event time")) if c}
    )
    problems = [
        f"sample {sample_name}: lacks the {kind} column {column!r}"
        for column, kind in configured.items()
        if column not in frame.columns
    ]
    if column_set is not None:
        for column in [c for c in column_set if c not in frame.columns and c not in configured]:
            problems.append(f"sample {sample_name}: lacks the suite's column {column!r}")
        for column in [str(c) for c in frame.columns if c not in column_set]:
            problems.append(f"sample {sample_name}: column {column!r} is not in the suite: ingest would quarantine it")
    if settings.label_column in frame.columns:
        label = frame[settings.label_column].dropna()
        distinct = int(label.nunique())
        shown = ", ".join(repr(v) for v in sorted(label.unique(), key=str)[:3])
        if distinct < 2:
            problems.append(
                f"sample {sample_name}: label {settings.label_column!r} has {distinct} value(s) ({shown}): "
                f"a {settings.task} model needs at least two"
            )
        elif settings.task == "binary" and distinct != 2:
            problems.append(
                f"sample {sample_name}: label {settings.label_column!r} has {distinct} values: binary needs two"
            )
        if settings.task == "regression" and (
            not pd.api.types.is_numeric_dtype(label.dtype) or pd.api.types.is_bool_dtype(label.dtype)
        ):
            problems.append(
                f"sample {sample_name}: label {settings.label_column!r} is {label.dtype}, not numeric: "
                "a regression target must be a number"
            )
    outcome = validate_batch(frame.reset_index(drop=True), settings)
    for failure in outcome.failures:
        if failure.expectation == "expect_table_columns_to_match_set" or failure.error == "column missing":
            continue  # named above, column by column
        problems.append(f"sample {sample_name}: ingest would fail {failure.describe()}")
    for flag in outcome.flags:
        if flag.error != "column missing":
            problems.append(f"sample {sample_name}: distribution guard would flag {flag.describe()}")
    return problems
