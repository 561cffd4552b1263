"""Validation (Great Expectations) and drift (Evidently) at 10k / 100k / 1M rows: time, peak memory,
and the ratio to a plain pandas / scipy computation of the same checks in the same process.

- validation: ``validate_batch`` (the project's GX suite through GX's pandas engine) against the same
  expectations computed directly with pandas (columns, row count, nulls, dtypes, ranges, sets, unique);
- drift: ``compute_drift`` (Evidently ``DataDriftPreset`` + score drift, both sides sampled to
  ``CT_DRIFT_SAMPLE_ROWS``) against scipy computing the tests Evidently picks for these sizes
  (normed Wasserstein distance for numeric columns, Jensen-Shannon distance for categorical ones)
  on the same samples. Above the cap the note adds one run of the same call on every row (no
  sampling): what the cap saves.

Time: median of ``--repeats`` runs after a warm-up. Peak memory: a separate run under ``tracemalloc``
(Python and numpy allocations; the input frame itself is not counted).

    python -m benchmarks.bench_quality --rows 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from typing import Any

from benchmarks.common import Row, emit, json_argument


def pandas_checks(frame: Any, suite: list[dict[str, Any]]) -> dict[str, int]:
    """The suite's expectations computed directly: unexpected rows (or 1/0) per expectation."""
    failures: dict[str, int] = {}
    for index, expectation in enumerate(suite):
        kind, kw = expectation["type"], expectation["kwargs"]
        column: Any = frame[kw["column"]] if "column" in kw else None
        if kind == "expect_table_columns_to_match_set":
            bad = int(set(frame.columns) != set(kw["column_set"]))
        elif kind == "expect_table_row_count_to_be_between":
            bad = int(not (kw.get("min_value") or 0) <= len(frame) <= (kw.get("max_value") or float("inf")))
        elif kind == "expect_column_values_to_not_be_null":
            bad = int(column.isna().sum())
        elif kind == "expect_column_values_to_be_in_type_list":
            bad = int(str(column.dtype) not in kw["type_list"])
        elif kind == "expect_column_values_to_be_between":
            values = column.dropna()
            low, high = kw.get("min_value"), kw.get("max_value")
            ok = (values >= low if low is not None else True) & (values <= high if high is not None else True)
            bad = int((~ok).sum()) if not isinstance(ok, bool) else 0
        elif kind == "expect_column_values_to_be_in_set":
            bad = int((~column.dropna().isin(kw["value_set"])).sum())
        elif kind == "expect_column_values_to_be_unique":
            bad = int(column.duplicated(keep=False).sum())
        elif kind == "expect_column_stdev_to_be_between":  # a distribution guard: one aggregate each
            spread = float(column.std())
            low, high = kw.get("min_value"), kw.get("max_value")
            bad = int((low is not None and spread < low) or (high is not None and spread > high))
        elif kind == "expect_column_unique_value_count_to_be_between":
            distinct = int(column.nunique())
            low, high = kw.get("min_value"), kw.get("max_value")
            bad = int((low is not None and distinct < low) or (high is not None and distinct > high))
        else:
            raise ValueError(f"no pandas twin for {kind}")
        failures[f"{index}:{kind}"] = bad
    return failures


def scipy_drift(reference: Any, current: Any, numeric: list[str], categorical: list[str]) -> dict[str, bool]:
    """What Evidently computes for > 1,000 rows, with scipy on the same samples."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    drifted = {}
    for column in numeric:
        ref, cur = reference[column].to_numpy(float), current[column].to_numpy(float)
        norm = max(float(np.std(ref)), 1e-3)
        drifted[column] = wasserstein_distance(ref, cur) / norm >= 0.1
    for column in categorical:
        keys = sorted(set(reference[column].unique()) | set(current[column].unique()))
        ref = reference[column].value_counts(normalize=True).reindex(keys, fill_value=0).to_numpy()
        cur = current[column].value_counts(normalize=True).reindex(keys, fill_value=0).to_numpy()
        drifted[column] = float(jensenshannon(ref, cur)) >= 0.1
    return drifted


def timed(call: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median seconds, peak MiB allocated during one extra call under tracemalloc)."""
    call()  # warm-up: imports, caches
    seconds = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    gc.collect()
    tracemalloc.start()
    call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(seconds), peak / 2**20


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--validation-target", type=float, default=2.0, help="seconds at 1M rows")
    parser.add_argument("--drift-target", type=float, default=15.0, help="seconds at any size")
    json_argument(parser)
    args = parser.parse_args(argv)

    import json

    from devtools.datasets import BatchSpec, generate_batch
    from include.continuous_training.config import load_settings
    from include.continuous_training.drift import compute_drift, sample_rows
    from include.continuous_training.features import FeatureSpec
    from include.continuous_training.registry import LoadedModel
    from include.continuous_training.training import fit_booster, training_params
    from include.continuous_training.validation import validate_batch

    settings = load_settings()
    suite = json.loads(settings.expectation_suite_path.read_text())["expectations"]
    train = generate_batch(BatchSpec(rows=20_000, seed=1))
    spec = FeatureSpec.from_frame(train, settings)
    params, rounds, patience = training_params(settings, None, "cpu")
    booster, _ = fit_booster(train, generate_batch(BatchSpec(rows=5_000, seed=2)), spec, params, rounds, patience)
    model = LoadedModel(booster=booster, spec=spec, uri="local")
    reference = train.sample(n=settings.reference_sample_rows, random_state=settings.seed)[list(spec.feature_names)]
    numeric, categorical = [*settings.numeric_columns, "score"], list(settings.categorical_columns)
    cap = settings.drift_sample_rows

    rows: list[Row] = []
    for n in args.rows:
        frame = generate_batch(BatchSpec(rows=n, seed=3, covariate_drift=0.5))
        frame[settings.timestamp_column] = frame[settings.timestamp_column].dt.tz_localize(None)  # as read_batch does
        outcome = validate_batch(frame, settings)
        assert outcome.success, outcome.reason
        gx_s, gx_mib = timed(partial(validate_batch, frame, settings), args.repeats)
        pd_s, pd_mib = timed(partial(pandas_checks, frame, suite), args.repeats)
        at_scale = n >= 1_000_000
        rows.append(
            Row(
                "validation",
                f"validate {n:,} rows (GX suite, {len(suite)} expectations)",
                gx_s,
                pd_s,
                "s",
                "pandas, same checks",
                f"≤ {args.validation_target:g} s at 1M rows" if at_scale else "—",
                gx_s <= args.validation_target if at_scale else None,
                note=f"peak {gx_mib:,.0f} MiB vs {pd_mib:,.0f} MiB",
            )
        )
        print(rows[-1], flush=True)

        current = frame.assign(score=booster.inplace_predict(spec.matrix(frame)))

        def baseline(current: Any = current) -> dict[str, bool]:
            """The same work as compute_drift: sample, score the reference, then the tests."""
            sample = sample_rows(current, cap, settings.seed)
            scored = reference.assign(score=booster.inplace_predict(spec.matrix(reference)))
            return scipy_drift(scored, sample, numeric, categorical)

        ev_s, ev_mib = timed(partial(compute_drift, reference, current, model, settings), args.repeats)
        sp_s, sp_mib = timed(baseline, args.repeats)
        note = f"peak {ev_mib:,.0f} MiB vs {sp_mib:,.0f} MiB"
        if n > cap:  # what the cap saves: the same call on every row, once (it is slow by design)
            started = time.perf_counter()
            compute_drift(reference, current, model, settings, cap=n)
            unsampled_s = time.perf_counter() - started
            note += f"; unsampled {unsampled_s:.2f} s ({unsampled_s / ev_s:.1f}x)"
        rows.append(
            Row(
                "drift",
                f"drift of {n:,} logged rows (Evidently, sampled to {min(n, cap):,})",
                ev_s,
                sp_s,
                "s",
                "scipy, same tests and samples",
                f"≤ {args.drift_target:g} s",
                ev_s <= args.drift_target,
                note=note,
            )
        )
        print(rows[-1], flush=True)
        del frame, current
    emit(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
