"""Traffic generator: score generated (or your own) transactions through the endpoint over HTTP.

    python -m devtools.traffic --url http://127.0.0.1:8000 --rows 2000 \\
        [--covariate-drift 1.0] [--rows-per-request 1] [--concurrency 4] [--seed 7]

Each worker thread keeps one HTTP/1.1 connection open and posts ``rows-per-request`` records at a
time to ``/predict``. The report counts requests, rows, the answers by status code, the model
versions that answered, and latency percentiles. Standard library only (plus the dataset
generator), so it runs anywhere the package does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class TrafficReport:
    requests: int = 0
    rows: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    prediction_ids: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def summary(self) -> str:
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(self.versions.items())) or "none"
        rate = self.requests / self.seconds if self.seconds else 0.0
        return (
            f"{self.requests} requests ({self.rows} rows) in {self.seconds:.1f} s ({rate:.0f} req/s): "
            f"{self.ok} ok, {self.failed} failed; p50 {self.percentile(50):.1f} ms, p99 {self.percentile(99):.1f} ms; "
            f"answered by {versions}"
        )


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout)
    return http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)


def send(
    url: str,
    records: Sequence[dict[str, Any]],
    rows_per_request: int = 1,
    concurrency: int = 4,
    timeout: float = 10.0,
) -> TrafficReport:
    """Post ``records`` to ``url``/predict; never raises for an HTTP error, counts it instead."""
    if rows_per_request < 1 or concurrency < 1:
        raise ValueError("rows_per_request and concurrency must be >= 1")
    chunks = [list(records[i : i + rows_per_request]) for i in range(0, len(records), rows_per_request)]
    report = TrafficReport()
    lock = threading.Lock()
    cursor = iter(range(len(chunks)))

    def worker() -> None:
        conn = _connection(url, timeout)
        local = TrafficReport()
        try:
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    break
                chunk = chunks[index]
                body = json.dumps(chunk[0] if len(chunk) == 1 else {"records": chunk}).encode()
                started = time.perf_counter()
                try:
                    conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    payload = response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = _connection(url, timeout)
                    status, payload = 0, b""  # 0: no answer (connection refused / reset / timed out)
                local.latencies_ms.append((time.perf_counter() - started) * 1000)
                local.requests += 1
                local.rows += len(chunk)
                local.statuses[status] += 1
                if status == 200:
                    answer = json.loads(payload)
                    predictions = answer.get("predictions") or [answer]
                    local.prediction_ids += [p["prediction_id"] for p in predictions]
                    local.versions[str(answer.get("model_version"))] += 1
        finally:
            conn.close()
            with lock:
                report.requests += local.requests
                report.rows += local.rows
                report.statuses.update(local.statuses)
                report.versions.update(local.versions)
                report.prediction_ids += local.prediction_ids
                report.latencies_ms += local.latencies_ms

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, max(1, len(chunks))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.perf_counter() - started
    return report


def generated_records(
    rows: int, seed: int, covariate_drift: float = 0.0, features: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Feature records of a generated batch (no label, no id): what a client would send."""
    from devtools.datasets import BatchSpec, generate_batch
    from include.continuous_training.config import load_settings

    columns = list(features or load_settings().feature_columns)
    frame = generate_batch(BatchSpec(rows=rows, seed=seed, covariate_drift=covariate_drift))
    return list(frame[columns].to_dict(orient="records"))


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m devtools.traffic``."""
    parser = argparse.ArgumentParser(prog="python -m devtools.traffic", description=__doc__)
    parser.add_argument("--url", required=True, help="endpoint base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--covariate-drift", type=float, default=0.0)
    parser.add_argument("--rows-per-request", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    records = generated_records(args.rows, args.seed, args.covariate_drift)
    report = send(args.url.rstrip("/"), records, args.rows_per_request, args.concurrency)
    print(report.summary())
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
