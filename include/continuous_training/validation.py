"""Read a landing object and validate it with a versioned Great Expectations suite.

The suite lives in a JSON file in the repository (``expectations/transactions.json`` by default,
``CT_EXPECTATION_SUITE`` to use another). :func:`build_suite_from_reference` writes a starting suite
for a user's own table. Expectations fall in two kinds:

- *batch-level* (schema, dtypes, row count): any failure quarantines the whole object;
- *row-level* (nulls, ranges, allowed values, uniqueness): the failing rows may be quarantined on their
  own while the rest goes on, as long as they are at most ``bad_row_budget`` of the batch.

Event times are also checked against the ingest time (:func:`check_event_times`): a row from the
future is a row-level failure under the same budget; rows older than the training window are counted.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.continuous_training.config import Settings
from include.continuous_training.errors import DataError

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
NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "Int64", "float32", "float64", "Float64"]
TEXT_TYPES = ["object", "str", "string", "StringDtype", "category"]
# Timestamps are held as tz-naive UTC: GX's dtype check cannot match tz-aware pandas dtypes.
TIMESTAMP_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]
LABEL_TYPES = ["int8", "int16", "int32", "int64", "Int64", "float64", "bool"]
EXAMPLE_ROWS = 5


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


@dataclass
class ValidationOutcome:
    """What validation decided about one batch."""

    rows: int
    suite: SuiteInfo
    failures: list[FailedExpectation]
    bad_row_index: list[int]
    batch_rejected: bool
    reason: str
    event_times: EventTimeCheck | None = None

    @property
    def success(self) -> bool:
        return not self.failures

    def as_report(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "bad_rows": len(self.bad_row_index),
            "suite": vars(self.suite),
            "batch_rejected": self.batch_rejected,
            "reason": self.reason,
            "failed_expectations": [vars(f) for f in self.failures],
            "event_times": self.event_times.as_report() if self.event_times else None,
        }


# -- reading --------------------------------------------------------------------------------------
def read_batch(data: bytes, key: str, settings: Settings) -> pd.DataFrame:
    """Parse a landing object (CSV or Parquet) into a DataFrame, or raise :class:`UnreadableBatchError`.

    Timestamps are normalised to tz-naive UTC (CSV text is parsed, tz-aware values converted);
    values that do not parse become nulls, which the suite's not-null expectation reports row by row.
    """
    import pandas as pd

    if not data:
        raise UnreadableBatchError("zero-byte object")
    name = key.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as error:  # pyarrow raises several types for corrupt files
            raise UnreadableBatchError(f"not a readable Parquet file ({type(error).__name__}: {error})") from error
    elif name.endswith(".csv"):
        frame = _read_csv(data)
    else:
        raise UnreadableBatchError("unsupported file type: expected a .csv or .parquet object")
    if settings.timestamp_column in frame.columns:
        column = frame[settings.timestamp_column]
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            frame[settings.timestamp_column] = column.dt.tz_convert("UTC").dt.tz_localize(None)
        elif not pd.api.types.is_datetime64_dtype(column.dtype):
            parsed = pd.to_datetime(column, utc=True, errors="coerce", format="ISO8601")
            frame[settings.timestamp_column] = parsed.dt.tz_localize(None)
    return frame


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


def build_suite_from_reference(
    frame: pd.DataFrame,
    settings: Settings,
    name: str,
    version: str = "1",
    range_margin: float = 0.5,
    min_rows: int = 1,
) -> dict[str, Any]:
    """A starting suite (as a JSON-ready dict) for a reference table of the user's own data.

    It pins the column set, dtypes, non-null columns, numeric ranges widened by ``range_margin``
    of their span, the categories seen, label values {0, 1}, a minimum row count and unique ids.
    Review it, then save it with ``json.dump`` and point ``CT_EXPECTATION_SUITE`` at the file.
    """
    expectations: list[dict[str, Any]] = [
        _exp("expect_table_columns_to_match_set", column_set=list(frame.columns), exact_match=True),
        _exp("expect_table_row_count_to_be_between", min_value=min_rows),
    ]
    for column in frame.columns:
        expectations.append(_exp("expect_column_values_to_not_be_null", column=column))
        if column == settings.label_column:
            expectations.append(_exp("expect_column_values_to_be_in_type_list", column=column, type_list=LABEL_TYPES))
            expectations.append(_exp("expect_column_values_to_be_in_set", column=column, value_set=[0, 1]))
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
    return {"name": name, "meta": {"version": version}, "expectations": expectations}


def _exp(kind: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {}}


# -- validating ----------------------------------------------------------------------------------
def validate_batch(frame: pd.DataFrame, settings: Settings, ingested_at: datetime | None = None) -> ValidationOutcome:
    """Run the suite on ``frame`` and decide: pass, quarantine some rows, or quarantine the batch.

    Event times later than ``ingested_at`` (default: now) plus ``CT_MAX_FUTURE_SKEW_MINUTES`` count
    as failing rows under the bad-row budget, beside the suite's row-level expectations.
    """
    suite, info = load_suite(settings.expectation_suite_path)
    results = _run(frame, suite, "SUMMARY")
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
        return ValidationOutcome(rows, info, [], [], False, "all expectations passed", times)

    batch_level = [f for f in failures if not f.row_level or f.error]
    total_unexpected = sum(f.unexpected_count or 0 for f in failures)
    budget_rows = int(settings.bad_row_budget * rows)
    if batch_level:
        reason = "; ".join(f.describe() for f in batch_level[:3])
        return ValidationOutcome(rows, info, failures, [], True, reason, times)
    if total_unexpected > budget_rows:
        share = total_unexpected / max(rows, 1)
        reason = (
            f"{total_unexpected} failing row checks ({share:.1%}) exceed the bad-row budget of "
            f"{settings.bad_row_budget:.1%}: " + "; ".join(f.describe() for f in failures[:3])
        )
        return ValidationOutcome(rows, info, failures, [], True, reason, times)

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
    return ValidationOutcome(rows, info, failures, sorted(bad_index), False, reason, times)


def _arrow_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as Arrow-backed strings, for GX: its null, set and uniqueness checks run in C
    instead of over Python objects, and its type check reads the dtype instead of testing every value
    (the validation rows of ``make bench``). A column mixing strings with other types stays ``object``
    so the per-value type check still names the odd values."""
    import pandas as pd

    converted = {
        name: frame[name].astype("string[pyarrow]")
        for name in frame.columns
        if frame[name].dtype == object and pd.api.types.infer_dtype(frame[name], skipna=True) == "string"
    }
    return frame.assign(**converted) if converted else frame


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
