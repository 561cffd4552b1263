"""Seeded card-transaction batches for development, tests, benchmarks and the demo.

The pipeline never depends on this dataset: the feature list, label, id and timestamp columns come
from :mod:`include.continuous_training.config` and the expectation suite, so a user can bring their
own table. This generator only gives us realistic data with known knobs:

- ``covariate_drift`` (0..1): inputs move (bigger amounts, further from home, more online traffic,
  riskier merchants) while the label mechanism stays the same.
- ``concept_drift`` (0..1): the label mechanism changes (fraud moves from "far from home and large"
  toward "new cards at night") while the inputs look the same.
- ``fraud_rate``: the base rate of the label; the intercept is solved so the batch hits it.

CLI (writes one batch into the S3 landing prefix, or to a local file)::

    python -m devtools.datasets --rows 5000 --seed 7 --format parquet
    python -m devtools.datasets --rows 100 --output /tmp/batch.csv
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from include.continuous_training.config import load_settings

if TYPE_CHECKING:
    import pandas as pd

FileFormat = Literal["csv", "parquet"]

MERCHANT_CATEGORIES = ("grocery", "restaurants", "fuel", "electronics", "travel", "online_services", "jewelry")
MERCHANT_RISK = {
    "grocery": -0.6,
    "restaurants": -0.4,
    "fuel": 0.0,
    "electronics": 0.6,
    "travel": 0.5,
    "online_services": 0.4,
    "jewelry": 0.9,
}
CHANNELS = ("pos", "online", "atm")
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "NG")


@dataclass(frozen=True)
class BatchSpec:
    """What one generated batch looks like."""

    rows: int = 5000
    seed: int = 0
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    hours: float = 24.0
    fraud_rate: float = 0.05
    covariate_drift: float = 0.0
    concept_drift: float = 0.0


def generate_batch(spec: BatchSpec) -> pd.DataFrame:
    """Return a DataFrame of ``spec.rows`` transactions; the same spec always gives the same rows."""
    import numpy as np
    import pandas as pd

    if spec.rows < 1:
        raise ValueError(f"rows must be >= 1, got {spec.rows}")
    if not 0.0 < spec.fraud_rate < 1.0:
        raise ValueError(f"fraud_rate must be in (0, 1), got {spec.fraud_rate}")
    rng = np.random.default_rng(spec.seed)
    n = spec.rows
    cov = float(spec.covariate_drift)

    channel_p = np.array([0.6 - 0.3 * cov, 0.3 + 0.3 * cov, 0.1])
    channel = rng.choice(CHANNELS, size=n, p=channel_p / channel_p.sum())
    category_p = np.array([0.25, 0.2, 0.15, 0.12, 0.1, 0.12, 0.06])
    category_p = category_p + cov * np.array([-0.1, -0.05, -0.05, 0.08, 0.04, 0.04, 0.04])
    category = rng.choice(MERCHANT_CATEGORIES, size=n, p=category_p / category_p.sum())
    country = rng.choice(COUNTRIES, size=n, p=[0.45, 0.12, 0.1, 0.1, 0.08, 0.08, 0.07])

    amount = np.round(rng.lognormal(mean=3.6 + 0.8 * cov, sigma=1.0, size=n), 2)
    card_age_days = rng.gamma(shape=2.0, scale=400.0, size=n).astype(int)
    hour_of_day = ((rng.normal(14, 5, size=n) + 24) % 24).astype(int)
    distance = np.round(rng.exponential(scale=15.0 * (1 + 2 * cov), size=n), 3)
    tx_24h = rng.poisson(lam=3 + 2 * cov, size=n)
    risk = np.round(np.clip(rng.beta(2, 5, size=n) + 0.15 * cov, 0, 1), 4)

    night = ((hour_of_day < 6) | (hour_of_day >= 23)).astype(float)
    new_card = (card_age_days < 60).astype(float)
    merchant = np.vectorize(MERCHANT_RISK.get)(category)
    original = (
        0.9 * np.log1p(amount) / 3
        + 1.1 * np.log1p(distance) / 2
        + 0.8 * (channel == "online")
        + 0.6 * merchant
        + 2.0 * risk
        + 0.15 * tx_24h
    )
    shifted = 1.6 * new_card + 1.4 * night + 0.9 * (channel == "atm") - 0.4 * merchant + 0.15 * tx_24h
    signal = 2.0 * ((1 - spec.concept_drift) * original + spec.concept_drift * shifted)
    signal = signal + rng.normal(0, 0.3, size=n)
    intercept = _solve_intercept(signal, spec.fraud_rate)
    label = (rng.random(n) < 1 / (1 + np.exp(-(signal + intercept)))).astype(int)

    offsets = np.sort(rng.uniform(0, spec.hours * 3600, size=n))
    event_time = pd.to_datetime(spec.start) + pd.to_timedelta(offsets, unit="s")
    ids = [f"tx-{spec.seed}-{i:08d}" for i in range(n)]
    return pd.DataFrame(
        {
            "transaction_id": ids,
            "event_time": event_time,
            "amount": amount,
            "card_age_days": card_age_days,
            "hour_of_day": hour_of_day,
            "distance_from_home_km": distance,
            "transactions_last_24h": tx_24h,
            "merchant_risk_score": risk,
            "merchant_category": category,
            "channel": channel,
            "country": country,
            "is_fraud": label,
        }
    )


def _solve_intercept(signal: object, rate: float) -> float:
    """Bisection for the intercept that makes the mean predicted probability equal ``rate``."""
    import numpy as np

    values = np.asarray(signal, dtype=float)
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2
        if float(np.mean(1 / (1 + np.exp(-(values + mid))))) > rate:
            high = mid
        else:
            low = mid
    return (low + high) / 2


def to_bytes(frame: pd.DataFrame, file_format: FileFormat) -> bytes:
    """Serialise a batch the way a producer would drop it in S3 (ISO timestamps in CSV)."""
    buffer = io.BytesIO()
    if file_format == "csv":
        frame.to_csv(buffer, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    elif file_format == "parquet":
        frame.to_parquet(buffer, index=False)
    else:
        raise ValueError(f"unknown format {file_format!r}: expected csv or parquet")
    return buffer.getvalue()


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m devtools.datasets``."""
    parser = argparse.ArgumentParser(prog="python -m devtools.datasets", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--start", type=datetime.fromisoformat, default=BatchSpec.start, help="ISO time of the first row"
    )
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--fraud-rate", type=float, default=0.05)
    parser.add_argument("--covariate-drift", type=float, default=0.0)
    parser.add_argument("--concept-drift", type=float, default=0.0)
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--key", help="object name under the landing prefix (default: derived from seed and time)")
    parser.add_argument("--output", type=Path, help="write to this local file instead of S3")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = args.start if args.start.tzinfo else args.start.replace(tzinfo=UTC)
    spec = BatchSpec(args.rows, args.seed, start, args.hours, args.fraud_rate, args.covariate_drift, args.concept_drift)
    data = to_bytes(generate_batch(spec), args.format)
    if args.output:
        args.output.write_bytes(data)
        print(f"wrote {spec.rows} rows to {args.output}")
        return 0
    from include.continuous_training.storage import s3_client

    settings = load_settings()
    name = args.key or f"{start:%Y-%m-%d}/batch-{args.seed}-{start + timedelta(hours=args.hours):%H%M%S}.{args.format}"
    key = settings.landing_prefix + name.lstrip("/")
    s3_client(settings).put_object(Bucket=settings.s3_bucket, Key=key, Body=data)
    print(f"wrote {spec.rows} rows to {settings.s3_uri(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
