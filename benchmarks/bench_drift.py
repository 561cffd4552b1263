"""Time of the drift measurement for 10k / 100k / 1M logged rows, with and without sampling.

Same process, same reference (the champion's 5,000-row reference sample), same model:
``compute_drift`` with the configured cap (``CT_DRIFT_SAMPLE_ROWS``, default 20,000) against the same
call with no cap. Prints seconds and the ratio.

    python -m benchmarks.bench_drift --rows 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--skip-unsampled-above", type=int, default=10_000_000)
    args = parser.parse_args()

    from include.continuous_training.config import load_settings
    from include.continuous_training.datasets import BatchSpec, generate_batch
    from include.continuous_training.drift import compute_drift
    from include.continuous_training.registry import LoadedModel
    from include.continuous_training.training import FeatureSpec, fit_booster, training_params

    settings = load_settings()
    train = generate_batch(BatchSpec(rows=20_000, seed=1))
    spec = FeatureSpec.from_frame(train, settings)
    params, rounds, patience = training_params(settings, None, "cpu")
    booster, _ = fit_booster(train, generate_batch(BatchSpec(rows=5_000, seed=2)), spec, params, rounds, patience)
    model = LoadedModel(booster=booster, spec=spec, uri="local")
    reference = train.sample(n=settings.reference_sample_rows, random_state=settings.seed)[list(spec.feature_names)]
    warm = reference.assign(score=booster.inplace_predict(spec.matrix(reference)))
    compute_drift(reference, warm, model, settings)  # warm-up: imports and caches

    print(f"reference {len(reference)} rows; sample cap {settings.drift_sample_rows}")
    for rows in args.rows:
        current = generate_batch(BatchSpec(rows=rows, seed=3, covariate_drift=0.5))
        current = current.assign(score=booster.inplace_predict(spec.matrix(current)))
        timings = {}
        for label, cap in (("sampled", settings.drift_sample_rows), ("unsampled", rows)):
            if label == "unsampled" and rows > args.skip_unsampled_above:
                continue
            started = time.perf_counter()
            summary, _ = compute_drift(reference, current, model, dataclasses.replace(settings), cap=cap)
            timings[label] = time.perf_counter() - started
            print(
                f"{rows:>9,} rows {label:9s} {timings[label]:7.2f}s  drift share {summary['drift_share']:.2f}",
                flush=True,
            )
        if len(timings) == 2:
            print(f"{rows:>9,} rows unsampled / sampled = {timings['unsampled'] / timings['sampled']:.1f}x")


if __name__ == "__main__":
    main()
