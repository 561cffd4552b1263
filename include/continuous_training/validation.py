"""Read a landing object and validate it with a versioned Great Expectations suite.

The suite lives in a JSON file in the repository (``expectations/transactions.json`` by default,
``CT_EXPECTATION_SUITE`` to use another). :func:`build_suite_from_reference` writes a starting suite
for a user's own table. Expectations fall in two kinds:

- *batch-level* (schema, dtypes, row count): any failure quarantines the whole object;
- *row-level* (nulls, ranges, allowed values, uniqueness): the failing rows may be quarantined on their
  own while the rest goes on, as long as they are at most ``bad_row_budget`` of the batch;
- *distribution guards* (``meta: {"guard": "distribution"}``): aggregate checks whose thresholds come
  from a reference table (:func:`distribution_guards`): a numeric feature whose spread collapsed, a
  categorical feature down to one value, a null rate far above the reference's. They catch a batch
  that is valid row by row but silently broken upstream (``amount`` = 42.0 on every row). A batch
  that trips one is curated and flagged (``CT_DISTRIBUTION_GUARD_ACTION=flag``, the default) or
  quarantined (``quarantine``); batches under ``CT_DISTRIBUTION_GUARD_MIN_ROWS`` rows are not guarded.

Event times are also checked against the ingest time (:func:`check_event_times`): a row from the
future is a row-level failure under the same budget; rows older than the training window are counted.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.continuous_training.config import DERIVED_EVENT_TIME_COLUMN, DERIVED_ID_COLUMN, Settings
from include.continuous_training.errors import ConfigurationError, DataError

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core.expectation_suite import ExpectationSuite

ROW_LEVEL_EXPECTATIONS = frozenset(
    {
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_unique",
    }
)
# pandas' nullable dtypes by their class names: GX matches "Int64Dtype", never "Int64" (kept for older suites).
NULLABLE_NUMERIC_TYPES = ["Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype", "Float32Dtype", "Float64Dtype"]
NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "Int64", "float32", "float64", "Float64", *NULLABLE_NUMERIC_TYPES]
TEXT_TYPES = ["object", "str", "string", "StringDtype", "category"]
# Timestamps are held as tz-naive UTC: GX's dtype check cannot match tz-aware pandas dtypes.
TIMESTAMP_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]
LABEL_TYPES = ["int8", "int16", "int32", "int64", "Int64", "float64", "bool", *NULLABLE_NUMERIC_TYPES]
EXAMPLE_ROWS = 5

GUARD = "distribution"  # the ``meta.guard`` value that marks a distribution guard in a suite
# A guard is left out of a suite where a batch drawn from the reference itself would trip it more
# often than this (e.g. a column that is one value in 99 % of the rows is often constant in 100 rows).
GUARD_FALSE_ALARM_CHANCE = 1e-6


class UnreadableBatchError(DataError):
    """The object could not be parsed as a table at all (empty, truncated, binary, wrong encoding)."""


@dataclass(frozen=True)
class SuiteInfo:
    name: str
    version: str
    sha256: str
    path: str


@dataclass
class FailedExpectation:
    """One expectation that did not hold, in the words a person reads in the quarantine report."""

    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    row_level: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = field(default_factory=list)
    error: str | None = None

    def describe(self) -> str:
        where = f"column `{self.column}`" if self.column else "table"
        if self.error:
            return f"{self.expectation} on {where}: {self.error}"
        if self.unexpected_count is not None:
            shown = ", ".join(repr(v) for v in self.examples[:3])
            return f"{self.expectation} on {where}: {self.unexpected_count} rows failed (e.g. {shown})"
        observed = self.kwargs.get("observed")
        return (
            f"{self.expectation} on {where}: observed {observed}"
            if observed is not None
            else f"{self.expectation} on {where}"
        )


@dataclass(frozen=True)
class GuardFlag:
    """One distribution guard that fired: what was observed against what the reference allows."""

    column: str | None
    check: str  # "spread", "collapse" or "null_rate"
    statistic: str  # "stdev", "distinct_values" or "null_share"
    observed: float | None
    expected: dict[str, float]  # {"min": …} or {"max": …}
    reference: float | None  # the statistic in the reference table the guard was built from
    expectation: str
    error: str | None = None

    def describe(self) -> str:
        where = f"column `{self.column}`" if self.column else "table"
        if self.error:
            return f"{where}: {self.check} guard could not be computed ({self.error})"
        bound = " and ".join(f"{'>=' if k == 'min' else '<='} {_short(v)}" for k, v in self.expected.items())
        reference = f", reference {_short(self.reference)}" if self.reference is not None else ""
        return f"{where}: {self.statistic} {_short(self.observed)} (expected {bound}{reference})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationOutcome:
    """What validation decided about one batch.

    ``failures`` are the hard expectations that did not hold; ``flags`` the distribution guards that
    fired (they reject the batch only with ``CT_DISTRIBUTION_GUARD_ACTION=quarantine``); ``guards``
    says whether the guards were evaluated at all.
    """

    rows: int
    suite: SuiteInfo
    failures: list[FailedExpectation]
    bad_row_index: list[int]
    batch_rejected: bool
    reason: str
    flags: list[GuardFlag] = field(default_factory=list)
    guards: str = "evaluated"
    event_times: EventTimeCheck | None = None

    @property
    def success(self) -> bool:
        return not self.failures and not self.flags

    def as_report(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "bad_rows": len(self.bad_row_index),
            "suite": vars(self.suite),
            "batch_rejected": self.batch_rejected,
            "reason": self.reason,
            "failed_expectations": [vars(f) for f in self.failures],
            "distribution_guards": {"status": self.guards, "fired": [f.as_dict() for f in self.flags]},
            "event_times": self.event_times.as_report() if self.event_times else None,
        }


# -- reading --------------------------------------------------------------------------------------
def read_batch(data: bytes, key: str, settings: Settings) -> pd.DataFrame:
    """Parse a landing object (CSV or Parquet) into a DataFrame, or raise :class:`UnreadableBatchError`.

    Timestamps are normalised to tz-naive UTC (CSV text is parsed, tz-aware values converted);
    values that do not parse become nulls, which the suite's not-null expectation reports row by row.
    """

    if not data:
        raise UnreadableBatchError("zero-byte object")
    name = key.lower()
    if name.endswith((".parquet", ".pq")):
        frame = _read_parquet(data)
    elif name.endswith(".csv"):
        frame = _read_csv(data)
    else:
        raise UnreadableBatchError("unsupported file type: expected a .csv or .parquet object")
    return normalise_columns(frame, settings)


def normalise_columns(frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Bring the configured columns to the dtypes the suite, the curated Parquet and training expect.

    - the event-time column becomes tz-naive UTC ``datetime64``: tz-aware values are converted, text
      (ISO 8601 times or dates such as ``"2026-11-02"``, as CSV holds them) is parsed; what does not
      parse becomes null, which the suite's not-null expectation reports row by row;
    - a boolean numeric feature (``bool``, nullable ``boolean``, or CSV's ``True``/``False`` text read
      back as objects) becomes ``float64`` 0/1 with NaN for a missing value: booleans are numeric
      features, so a model reads them as 0/1 and the endpoint takes 0/1 for them.

    Everything else is left as it arrived (pandas categoricals, Arrow dictionaries, nullable ``Int64``
    with NA, other datetime columns): the suite's type checks accept those as they are.
    :func:`read_batch` calls this, and so does :func:`build_suite_from_reference` for its reference,
    so a suite is built from the dtypes ingest will validate.
    """
    import pandas as pd

    changed: dict[str, pd.Series] = {}
    if settings.timestamp_column in frame.columns:
        column = frame[settings.timestamp_column]
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            changed[settings.timestamp_column] = column.dt.tz_convert("UTC").dt.tz_localize(None)
        elif not pd.api.types.is_datetime64_dtype(column.dtype):
            parsed = pd.to_datetime(column, utc=True, errors="coerce", format="ISO8601")
            changed[settings.timestamp_column] = parsed.dt.tz_localize(None)
    for name in settings.numeric_columns:
        if name in frame.columns and _is_boolean(frame[name]):
            changed[name] = frame[name].astype("boolean").astype("Float64").astype("float64")
    return frame.assign(**changed) if changed else frame


def _is_boolean(column: pd.Series) -> bool:
    import pandas as pd

    if pd.api.types.is_bool_dtype(column.dtype):
        return True
    return bool(
        pd.api.types.is_object_dtype(column.dtype) and pd.api.types.infer_dtype(column, skipna=True) == "boolean"
    )


def _read_parquet(data: bytes) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise UnreadableBatchError(f"not a readable Parquet file ({type(error).__name__}: {error})") from error
    try:
        return table.to_pandas()
    except (ValueError, TypeError):
        # The pandas metadata names a dtype pandas cannot parse back (an Arrow dictionary column written
        # from pandas): it is only a hint, the Arrow schema alone describes the data.
        return table.to_pandas(ignore_metadata=True)


def _read_csv(data: bytes) -> pd.DataFrame:
    import pandas as pd

    if b"\x00" in data[:65536]:
        raise UnreadableBatchError("binary content (NUL bytes) in a .csv object")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableBatchError(f"not UTF-8 text (invalid byte at offset {error.start})") from error
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        raise UnreadableBatchError(f"not parseable as CSV ({error})".replace("\n", " ")) from error
    if len(frame.columns) == 1:
        header = str(frame.columns[0])
        for delimiter in (";", "\t", "|"):
            if delimiter in header:
                raise UnreadableBatchError(
                    f"one column only: the header looks delimited by {delimiter!r}, expected ','"
                )
    return frame


# -- the suite ------------------------------------------------------------------------------------
def load_suite(path: Path) -> tuple[ExpectationSuite, SuiteInfo]:
    """Load the suite file; fail loudly if any expectation in it is not valid (GX only logs those)."""
    import great_expectations as gx

    raw_bytes = path.read_bytes()
    raw = json.loads(raw_bytes)
    expectations = raw.get("expectations", [])
    try:
        suite = gx.ExpectationSuite(name=raw["name"], expectations=expectations, meta=raw.get("meta", {}))
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path}: expectation suite is not valid: {str(error).splitlines()[0]}") from error
    if len(suite.expectations) != len(expectations):
        raise ValueError(f"{path}: {len(expectations) - len(suite.expectations)} expectations are not valid")
    info = SuiteInfo(
        name=raw["name"],
        version=str(raw.get("meta", {}).get("version", "unversioned")),
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        path=str(path),
    )
    return suite, info


class SettingNotInSuite(ConfigurationError):
    """A column the settings name is not a column of the expectation suite: a setting (or the suite) is wrong."""


def suite_columns(raw: dict[str, Any]) -> set[str]:
    """The columns a suite (its JSON) knows: its column-set expectation, and every column an expectation checks."""
    known: set[str] = set()
    for expectation in raw.get("expectations", []):
        kwargs = expectation.get("kwargs") or {}
        known.update(str(c) for c in kwargs.get("column_set") or kwargs.get("column_list") or [])
        if kwargs.get("column") is not None:
            known.add(str(kwargs["column"]))
    return known


def check_settings_against_suite(settings: Settings) -> None:
    """Fail with :class:`SettingNotInSuite` when a configured column is unknown to the suite.

    Every column the settings name (label, id, event time, numeric and categorical features) must be
    a column of ``CT_EXPECTATION_SUITE``; the id and event-time columns ingest derives (settings left
    empty) are added after validation, so the suite need not know them. Reads the suite file only
    (no Great Expectations): ingest calls it before it reads or moves any object.
    """
    from include.continuous_training.features import configured_columns

    path = settings.expectation_suite_path
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SettingNotInSuite(f"CT_EXPECTATION_SUITE {path}: cannot read the suite ({error})") from error
    known = suite_columns(raw)
    derived = {
        c
        for c, given in (
            (DERIVED_ID_COLUMN, settings.id_column),
            (DERIVED_EVENT_TIME_COLUMN, settings.timestamp_column),
        )
        if not given
    }
    unknown = {name: setting for name, setting in configured_columns(settings).items() if name not in known | derived}
    if unknown:
        which = "; ".join(f"{setting} names {name!r}" for name, setting in unknown.items())
        version = (raw.get("meta") or {}).get("version", "unversioned")
        raise SettingNotInSuite(
            f"{which}, which the expectation suite {path} (version {version}) does not know "
            f"(its columns: {sorted(known)}): fix the setting or the suite (CT_EXPECTATION_SUITE); "
            "no object was read or moved"
        )


def build_suite_from_reference(
    frame: pd.DataFrame,
    settings: Settings,
    name: str,
    version: str = "1",
    range_margin: float = 0.5,
    min_rows: int = 1,
    spread_factor: float = 0.25,
) -> dict[str, Any]:
    """A starting suite (as a JSON-ready dict) for a reference table of the user's own data.

    It pins the column set, dtypes, non-null columns (those with no null in the reference), numeric
    ranges widened by ``range_margin`` of their span, the categories seen, the label's type and
    classes for ``settings.task`` (:func:`label_expectations`), a minimum row count and unique ids;
    then it appends the :func:`distribution_guards` of the reference (``spread_factor`` is theirs).
    Review it, then save it with ``json.dump`` and point ``CT_EXPECTATION_SUITE`` at the file.
    """
    frame = normalise_columns(frame, settings)
    expectations: list[dict[str, Any]] = [
        _exp("expect_table_columns_to_match_set", column_set=list(frame.columns), exact_match=True),
        _exp("expect_table_row_count_to_be_between", min_value=min_rows),
    ]
    for column in frame.columns:
        if not frame[column].isna().any():  # a column with nulls in the reference gets a null-rate guard
            expectations.append(_exp("expect_column_values_to_not_be_null", column=column))
        if column == settings.label_column:
            expectations.extend(label_expectations(frame[column], settings))
        elif column == settings.timestamp_column:
            expectations.append(
                _exp("expect_column_values_to_be_in_type_list", column=column, type_list=TIMESTAMP_TYPES)
            )
        elif column == settings.id_column:
            expectations.append(_exp("expect_column_values_to_be_unique", column=column))
        elif column in settings.categorical_columns:
            expectations.append(_exp("expect_column_values_to_be_in_type_list", column=column, type_list=TEXT_TYPES))
            values = sorted(str(v) for v in frame[column].dropna().unique())
            expectations.append(_exp("expect_column_values_to_be_in_set", column=column, value_set=values))
        elif column in settings.numeric_columns:
            expectations.append(_exp("expect_column_values_to_be_in_type_list", column=column, type_list=NUMERIC_TYPES))
            low, high = float(frame[column].min()), float(frame[column].max())
            span = (high - low) or abs(high) or 1.0
            floor = 0.0 if low >= 0 else low - range_margin * span
            expectations.append(
                _exp(
                    "expect_column_values_to_be_between",
                    column=column,
                    min_value=floor,
                    max_value=high + range_margin * span,
                )
            )
    expectations.extend(distribution_guards(frame, settings, spread_factor=spread_factor))
    return {"name": name, "meta": {"version": version}, "expectations": expectations}


def label_expectations(label: pd.Series, settings: Settings) -> list[dict[str, Any]]:
    """The label's expectations for ``settings.task``, from its values in a reference table.

    - ``binary`` / ``multiclass``: its type (text, or numbers / booleans) and the set of classes seen
      (``[0, 1]`` for the bundled binary table): a batch with an unseen class fails row by row;
    - ``regression``: a numeric type only (any value is a valid target).
    """
    if settings.task == "regression":
        return [_exp("expect_column_values_to_be_in_type_list", column=label.name, type_list=NUMERIC_TYPES)]
    text = _is_text(label)
    seen = label.dropna().unique()
    classes = sorted(str(v) for v in seen) if text else sorted(v.item() if hasattr(v, "item") else v for v in seen)
    return [
        _exp(
            "expect_column_values_to_be_in_type_list", column=label.name, type_list=TEXT_TYPES if text else LABEL_TYPES
        ),
        _exp("expect_column_values_to_be_in_set", column=label.name, value_set=classes),
    ]


def distribution_guards(
    reference: pd.DataFrame, settings: Settings, spread_factor: float = 0.25, samples: int = 200
) -> list[dict[str, Any]]:
    """The distribution guards of a reference table, as suite expectations marked ``meta.guard``.

    Calibrated for batches of ``settings.distribution_guard_min_rows`` rows (smaller batches are
    not guarded), with ``settings.seed``:

    - **spread** (numeric features): ``expect_column_stdev_to_be_between`` with ``min_value`` =
      ``spread_factor`` x the lowest standard deviation among ``samples`` random draws of that many
      rows from the reference (so heavy tails and small batches do not trip it);
    - **collapse** (categorical features seen with two or more values):
      ``expect_column_unique_value_count_to_be_between`` with ``min_value`` 2;
    - **null rate** (any column with nulls in the reference): ``expect_column_values_to_not_be_null``
      with ``mostly`` = 1 - the largest null share allowed: twice the reference's, and at least the
      reference's plus four binomial standard deviations at that batch size.

    A spread or collapse guard is left out for a column so dominated by one value that a batch
    drawn from the reference would itself be constant with a chance above
    :data:`GUARD_FALSE_ALARM_CHANCE`; a null-rate guard that would allow every row to be null is left out.
    """
    import numpy as np
    import pandas as pd

    rows = settings.distribution_guard_min_rows
    rng = np.random.default_rng(settings.seed)
    guards: list[dict[str, Any]] = []
    for column in reference.columns:
        values = reference[column]
        null_share = float(values.isna().mean()) if len(values) else 0.0
        present = values.dropna()
        if 0.0 < null_share < 1.0:
            sigma = math.sqrt(null_share * (1 - null_share) / rows)
            allowed = max(2 * null_share, null_share + 4 * sigma)
            if allowed < 1.0:
                guards.append(
                    _guard(
                        "expect_column_values_to_not_be_null",
                        "null_rate",
                        {"null_share": _significant(null_share)},
                        rows,
                        column=column,
                        mostly=_significant(1 - allowed, down=True),
                    )
                )
        if present.empty or column not in (*settings.numeric_columns, *settings.categorical_columns):
            continue
        shares = present.value_counts(normalize=True).to_numpy()
        shares = shares[shares > 0]  # a categorical dtype also counts the categories never seen
        if len(shares) < 2 or float(np.sum(shares**rows)) > GUARD_FALSE_ALARM_CHANCE:
            continue
        if column in settings.numeric_columns and pd.api.types.is_numeric_dtype(present.dtype):
            numbers = present.to_numpy(dtype=float)
            draws = rng.choice(numbers, size=(samples, rows), replace=True)
            lowest = float(np.std(draws, axis=1, ddof=1).min())
            if lowest > 0:
                guards.append(
                    _guard(
                        "expect_column_stdev_to_be_between",
                        "spread",
                        {
                            "stdev": _significant(float(np.std(numbers, ddof=1))),
                            "lowest_sample_stdev": _significant(lowest),
                        },
                        rows,
                        column=column,
                        min_value=_significant(spread_factor * lowest, down=True),
                    )
                )
        elif column in settings.categorical_columns:
            guards.append(
                _guard(
                    "expect_column_unique_value_count_to_be_between",
                    "collapse",
                    {"distinct_values": len(shares)},
                    rows,
                    column=column,
                    min_value=2,
                )
            )
    return guards


def _guard(kind: str, check: str, reference: dict[str, float], rows: int, **kwargs: Any) -> dict[str, Any]:
    meta = {"guard": GUARD, "check": check, "reference": reference, "calibrated_for_rows": rows}
    return {"type": kind, "kwargs": kwargs, "meta": meta}


def _significant(value: float, down: bool = False) -> float:
    """``value`` to 4 significant digits (a readable suite); ``down``: never above ``value``."""
    if value == 0 or not math.isfinite(value) or not down:
        return float(f"{value:.4g}")
    scale = 10.0 ** (math.floor(math.log10(abs(value))) - 3)
    return float(f"{math.floor(value / scale) * scale:.4g}")


def _exp(kind: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {}}


# -- validating ----------------------------------------------------------------------------------
def validate_batch(frame: pd.DataFrame, settings: Settings, ingested_at: datetime | None = None) -> ValidationOutcome:
    """Run the suite on ``frame`` and decide: pass, quarantine some rows, or quarantine the batch.

    Event times later than ``ingested_at`` (default: now) plus ``CT_MAX_FUTURE_SKEW_MINUTES`` count
    as failing rows under the bad-row budget, beside the suite's row-level expectations. Distribution
    guards that fire are returned as ``flags``; with ``CT_DISTRIBUTION_GUARD_ACTION=quarantine`` they
    also reject a batch the hard expectations passed.
    """
    suite, info = load_suite(settings.expectation_suite_path)
    results = _run(frame, suite, "SUMMARY")
    rows = len(frame)
    flags, guards = _guard_flags([r for r in results if _is_guard(r)], rows, settings)
    flags = [f if f.column is None or f.column in frame.columns else replace(f, error="column missing") for f in flags]
    outcome = _judge(frame, [r for r in results if not _is_guard(r)], info, settings, ingested_at)
    outcome.flags, outcome.guards = flags, guards
    if flags and not outcome.batch_rejected:
        fired = "; ".join(f.describe() for f in flags[:3])
        if settings.distribution_guard_action == "quarantine":
            outcome.batch_rejected, outcome.bad_row_index = True, []
            outcome.reason = f"distribution guards fired (CT_DISTRIBUTION_GUARD_ACTION=quarantine): {fired}"
        else:
            passed = "hard expectations passed" if not outcome.failures else outcome.reason
            outcome.reason = f"{passed}; flagged by distribution guards: {fired}"
    return outcome


def _judge(
    frame: pd.DataFrame, results: list[Any], info: SuiteInfo, settings: Settings, ingested_at: datetime | None
) -> ValidationOutcome:
    """The hard expectations' verdict: pass, quarantine the failing rows, or quarantine the batch."""
    failures = [_failure(r) for r in results if not r.success]
    for failure in failures:
        if failure.column is not None and failure.column not in frame.columns:
            failure.error = "column missing"
    times = check_event_times(frame, settings, ingested_at)
    future = future_event_times_failure(frame, settings, times)
    if future is not None:
        failures.insert(0, future)  # first: the reason names it
    rows = len(frame)
    if not failures:
        return ValidationOutcome(rows, info, [], [], False, "all expectations passed", event_times=times)

    batch_level = [f for f in failures if not f.row_level or f.error]
    total_unexpected = sum(f.unexpected_count or 0 for f in failures)
    budget_rows = int(settings.bad_row_budget * rows)
    if batch_level:
        reason = "; ".join(f.describe() for f in batch_level[:3])
        return ValidationOutcome(rows, info, failures, [], True, reason, event_times=times)
    if total_unexpected > budget_rows:
        share = total_unexpected / max(rows, 1)
        reason = (
            f"{total_unexpected} failing row checks ({share:.1%}) exceed the bad-row budget of "
            f"{settings.bad_row_budget:.1%}: " + "; ".join(f.describe() for f in failures[:3])
        )
        return ValidationOutcome(rows, info, failures, [], True, reason, event_times=times)

    # Within budget: ask GX again, for the failing expectations only, which rows they were.
    import great_expectations as gx

    bad_index: set[int] = set(times.future_index)
    suite_failures = [f for f in failures if f is not future]
    if suite_failures:
        failing_suite = gx.ExpectationSuite(
            name=f"{info.name}-failing",
            expectations=[_exp(f.expectation, **f.kwargs) for f in suite_failures],
        )
        for result in _run(frame, failing_suite, "COMPLETE"):
            bad_index.update(int(i) for i in result.result.get("unexpected_index_list") or [])
    reason = f"{len(bad_index)} of {rows} rows failed row-level checks (within budget): " + "; ".join(
        f.describe() for f in failures[:3]
    )
    return ValidationOutcome(rows, info, failures, sorted(bad_index), False, reason, event_times=times)


def _is_guard(result: Any) -> bool:
    return (result.expectation_config.meta or {}).get("guard") == GUARD


_GUARD_STATISTICS = {
    "expect_column_stdev_to_be_between": "stdev",
    "expect_column_unique_value_count_to_be_between": "distinct_values",
    "expect_column_proportion_of_unique_values_to_be_between": "unique_share",
    "expect_column_values_to_not_be_null": "null_share",
}


def _guard_flags(results: list[Any], rows: int, settings: Settings) -> tuple[list[GuardFlag], str]:
    """The guards that fired, and whether they were evaluated (not below the minimum batch size)."""
    if not results:
        return [], "none in the suite"
    if rows < settings.distribution_guard_min_rows:
        return [], (
            f"not evaluated: {rows} rows, under CT_DISTRIBUTION_GUARD_MIN_ROWS={settings.distribution_guard_min_rows}"
        )
    return [_guard_flag(r) for r in results if not r.success], "evaluated"


def _guard_flag(result: Any) -> GuardFlag:
    config = result.expectation_config
    kind, kwargs, meta = str(config.type), dict(config.kwargs), dict(config.meta or {})
    payload = result.result or {}
    statistic = _GUARD_STATISTICS.get(kind, kind)
    if "mostly" in kwargs:  # a row-level expectation used as a guard: the share of rows that failed
        percent = payload.get("unexpected_percent")
        observed = None if percent is None else round(float(percent) / 100, 6)
        expected = {"max": round(1 - float(kwargs["mostly"]), 6)}
    else:
        value = payload.get("observed_value")
        observed = float(value) if isinstance(value, int | float) else None
        expected = {
            bound: float(kwargs[key])
            for bound, key in (("min", "min_value"), ("max", "max_value"))
            if kwargs.get(key) is not None
        }
    reference = (meta.get("reference") or {}).get(statistic)
    info = result.exception_info or {}
    error = None
    if info.get("raised_exception"):
        error = str(info.get("exception_message") or "raised an exception").splitlines()[0][:300]
    return GuardFlag(
        column=kwargs.get("column"),
        check=str(meta.get("check", statistic)),
        statistic=statistic,
        observed=observed,
        expected=expected,
        reference=None if reference is None else float(reference),
        expectation=kind,
        error=error,
    )


def _short(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _arrow_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as Arrow-backed strings, for GX: its null, set and uniqueness checks run in C
    instead of over Python objects, and its type check reads the dtype instead of testing every value
    (the validation rows of ``make bench``). A column mixing strings with other types stays ``object``
    so the per-value type check still names the odd values. pandas ``category`` columns and Arrow
    dictionaries of strings (what Parquet files written from categoricals read back as) become
    strings too: GX's type check reports them as ``CategoricalDtypeType`` and fails them otherwise."""
    converted = {name: frame[name].astype("string[pyarrow]") for name in frame.columns if _is_text(frame[name])}
    return frame.assign(**converted) if converted else frame


def _is_text(column: pd.Series) -> bool:
    import pandas as pd
    import pyarrow as pa

    dtype = column.dtype
    if pd.api.types.is_object_dtype(dtype):
        return bool(pd.api.types.infer_dtype(column, skipna=True) == "string")
    if isinstance(dtype, pd.CategoricalDtype):
        return bool(pd.api.types.infer_dtype(dtype.categories, skipna=True) == "string")
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_dictionary(dtype.pyarrow_dtype):
        value_type = dtype.pyarrow_dtype.value_type
        return bool(pa.types.is_string(value_type) or pa.types.is_large_string(value_type))
    return False


def _run(frame: pd.DataFrame, suite: ExpectationSuite, result_format: str) -> list[Any]:
    import great_expectations as gx
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # no tqdm bar per batch in task logs ("Calculating Metrics: 100%|...", rewritten line by line)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("landing")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
    )
    # GX matches a "StringDtype" type-list entry by pandas' default string storage: make it Arrow's.
    with pd.option_context("mode.string_storage", "pyarrow"):
        batch = batch_definition.get_batch(batch_parameters={"dataframe": _arrow_strings(frame).reset_index(drop=True)})
        validation = batch.validate(
            suite, result_format={"result_format": result_format, "partial_unexpected_count": 5}
        )
    return list(validation.results)


def _failure(result: Any) -> FailedExpectation:
    config = result.expectation_config
    kind = str(config.type)
    kwargs = {k: v for k, v in dict(config.kwargs).items() if k not in {"batch_id", "result_format"}}
    payload = result.result or {}
    error = None
    info = result.exception_info or {}
    if info.get("raised_exception"):
        message = str(info.get("exception_message") or "raised an exception")
        error = message.splitlines()[0][:300]
    mismatched = (payload.get("details") or {}).get("mismatched")
    if kind == "expect_table_columns_to_match_set" and mismatched:
        parts = [
            f"{label} columns {sorted(mismatched[k])}"
            for k, label in (("missing", "missing"), ("unexpected", "unexpected"))
            if mismatched.get(k)
        ]
        error = "; ".join(parts) or None
    observed = payload.get("observed_value")
    if observed is not None and "unexpected_count" not in payload:
        kwargs = {**kwargs, "observed": _jsonable(observed)}
    return FailedExpectation(
        expectation=kind,
        column=kwargs.get("column"),
        kwargs=kwargs,
        row_level=kind in ROW_LEVEL_EXPECTATIONS,
        unexpected_count=payload.get("unexpected_count"),
        unexpected_percent=payload.get("unexpected_percent"),
        examples=[_jsonable(v) for v in (payload.get("partial_unexpected_list") or [])[:EXAMPLE_ROWS]],
        error=error,
    )


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


# -- event times against the ingest time ----------------------------------------------------------
FUTURE_EVENT_TIMES = "event_time_not_after_ingest_time"


@dataclass(frozen=True)
class EventTimeCheck:
    """A batch's event times against the time it was ingested.

    Rows later than ``latest_allowed`` (ingest time + ``CT_MAX_FUTURE_SKEW_MINUTES``) cannot have
    happened yet: they are bad rows, under the bad-row budget like any other. Rows before
    ``oldest_in_window`` (ingest time - ``CT_TRAINING_WINDOW_DAYS``) are only counted: late data is
    still data, but a window anchored near the ingest time will not hold them.
    """

    ingested_at: str
    latest_allowed: str
    oldest_in_window: str
    future_index: list[int]
    old_rows: int
    earliest: str | None
    latest: str | None
    skew_minutes: float
    window_days: int

    @property
    def future_rows(self) -> int:
        return len(self.future_index)

    def as_report(self) -> dict[str, Any]:
        return {
            "ingested_at": self.ingested_at,
            "latest_allowed": self.latest_allowed,
            "oldest_in_window": self.oldest_in_window,
            "earliest": self.earliest,
            "latest": self.latest,
            "future_rows": self.future_rows,
            "old_rows": self.old_rows,
        }

    def old_rows_note(self, rows: int) -> str:
        """A clause for the ingest reason when some rows are older than the window ('' when none are)."""
        if not self.old_rows:
            return ""
        return (
            f"; {self.old_rows} of {rows} rows have event times before {self.oldest_in_window} "
            f"(ingest time - CT_TRAINING_WINDOW_DAYS={self.window_days}): curated and counted, "
            "a window ending near the ingest time will not hold them"
        )


@dataclass
class FutureEventTimes(FailedExpectation):
    """Rows whose event time lies after the ingest time plus the allowed clock skew (row-level)."""

    rows: int = 0
    latest_allowed: str = ""

    def describe(self) -> str:
        shown = ", ".join(repr(v) for v in self.examples[:3])
        return (
            f"{self.unexpected_count} of {self.rows} rows have event times after {self.latest_allowed} "
            f"(ingest time + CT_MAX_FUTURE_SKEW_MINUTES={self.kwargs['skew_minutes']:g}; e.g. {shown})"
        )


def check_event_times(frame: pd.DataFrame, settings: Settings, ingested_at: datetime | None = None) -> EventTimeCheck:
    """Event times of ``frame`` against ``ingested_at`` (default: now): future rows singled out, old rows counted.

    Timestamps are compared in UTC (tz-naive ones, as :func:`read_batch` leaves them, are UTC); so is
    a naive ``ingested_at``. Nulls (unparseable times) are left to the suite's not-null expectation. Without a
    datetime timestamp column (the suite rejects that batch anyway) nothing is flagged.
    """
    import numpy as np
    import pandas as pd

    at = pd.Timestamp(ingested_at or datetime.now(UTC))
    at = at.tz_convert("UTC").tz_localize(None) if at.tzinfo else at
    latest_allowed = _shifted(at, minutes=settings.max_future_skew_minutes)
    oldest_in_window = _shifted(at, days=-settings.training_window_days)
    column = frame.get(settings.timestamp_column)
    if column is not None and isinstance(column.dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_convert("UTC").dt.tz_localize(None)
    future_index: list[int] = []
    old_rows = 0
    earliest = latest = None
    if column is not None and pd.api.types.is_datetime64_dtype(column.dtype):
        future_index = [int(i) for i in np.flatnonzero((column > latest_allowed).to_numpy())]
        old_rows = int((column < oldest_in_window).sum())
        if column.notna().any():
            earliest, latest = column.min().isoformat(), column.max().isoformat()
    return EventTimeCheck(
        ingested_at=at.isoformat(),
        latest_allowed=latest_allowed.isoformat(),
        oldest_in_window=oldest_in_window.isoformat(),
        future_index=future_index,
        old_rows=old_rows,
        earliest=earliest,
        latest=latest,
        skew_minutes=settings.max_future_skew_minutes,
        window_days=settings.training_window_days,
    )


def future_event_times_failure(
    frame: pd.DataFrame, settings: Settings, check: EventTimeCheck
) -> FutureEventTimes | None:
    """The future rows of ``check`` as a row-level failure the bad-row budget counts (None when there are none)."""
    if not check.future_index:
        return None
    values = frame[settings.timestamp_column].iloc[check.future_index[:EXAMPLE_ROWS]]
    return FutureEventTimes(
        expectation=FUTURE_EVENT_TIMES,
        column=settings.timestamp_column,
        kwargs={
            "max_value": check.latest_allowed,
            "ingested_at": check.ingested_at,
            "skew_minutes": check.skew_minutes,
            "setting": "CT_MAX_FUTURE_SKEW_MINUTES",
        },
        row_level=True,
        unexpected_count=check.future_rows,
        unexpected_percent=100.0 * check.future_rows / max(len(frame), 1),
        examples=[value.isoformat() for value in values],
        rows=len(frame),
        latest_allowed=check.latest_allowed,
    )


def _shifted(at: pd.Timestamp, **delta: float) -> pd.Timestamp:
    """``at`` moved by ``delta``, clamped to what a timestamp can hold (a huge tolerance means "no bound")."""
    import pandas as pd

    step = next(iter(delta.values()))
    try:
        return at + pd.Timedelta(**delta)
    except (OverflowError, ValueError):  # pandas' OutOfBounds errors are ValueErrors
        return pd.Timestamp.max if step > 0 else pd.Timestamp.min
