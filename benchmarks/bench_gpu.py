"""GPU: ``xgboost.train`` on cpu vs cuda at ``--rows`` rows, same data and params, same process.

Runs only where this xgboost build has CUDA and a device is visible (``devices.select_device``);
elsewhere it records "no GPU here" and why, so the table always has the row.

    python -m benchmarks.bench_gpu --rows 1000000
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.common import Row, emit, json_argument


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    json_argument(parser)
    args = parser.parse_args(argv)

    from include.continuous_training.devices import select_device

    device, why = select_device()
    what = f"train {args.rows:,} rows: cuda vs cpu (xgboost.train, same data and params)"
    if device != "cuda":
        rows = [Row("gpu", what, None, None, "s", "", "faster on cuda", None, note=f"no GPU here: {why}")]
        emit(rows, args.json)
        return rows

    import xgboost as xgb

    from devtools.datasets import BatchSpec, generate_batch
    from include.continuous_training.config import load_settings
    from include.continuous_training.features import FeatureSpec
    from include.continuous_training.training import training_params

    settings = load_settings()
    frame = generate_batch(BatchSpec(rows=args.rows, seed=1, hours=24 * 7))
    cut = int(len(frame) * 0.9)
    spec = FeatureSpec.from_frame(frame.iloc[:cut], settings)
    dtrain, dvalid = spec.dmatrix(frame.iloc[:cut]), spec.dmatrix(frame.iloc[cut:])
    timings: dict[str, list[float]] = {"cpu": [], "cuda": []}
    for _ in range(args.repeats):
        for name in ("cpu", "cuda"):
            params, rounds, patience = training_params(settings, None, name)
            started = time.perf_counter()
            xgb.train(
                params,
                dtrain,
                rounds,
                evals=[(dvalid, "validation")],
                early_stopping_rounds=patience,
                verbose_eval=False,
            )
            timings[name].append(time.perf_counter() - started)
    cuda, cpu = statistics.median(timings["cuda"]), statistics.median(timings["cpu"])
    rows = [Row("gpu", what, cuda, cpu, "s", "same training on cpu", "faster on cuda", cuda < cpu, note=why)]
    emit(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
