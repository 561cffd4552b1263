"""Traffic generator: score generated (or your own) transactions through the endpoint over HTTP.

    python -m devtools.traffic --url http://127.0.0.1:8000 --rows 2000 \\
        [--covariate-drift 1.0] [--rows-per-request 1] [--concurrency 4] [--seed 7]

Each worker thread keeps one HTTP/1.1 connection open and posts ``rows-per-request`` records at a
time to ``/predict``. The report counts requests, rows, the answers by status code, the model
versions that answered, and latency percentiles. Standard library only (plus the dataset
generator), so it runs anywhere the package does.

:func:`send` posts a list of records once; :class:`BackgroundTraffic` keeps calling the endpoint
(the records round-robin, at most ``rate`` requests per second) until it is stopped: the live
traffic a rollout stage waits for::

    with BackgroundTraffic(url, records, rate=150) as traffic:
        ...                                  # a rollout runs
    print(traffic.report.summary())          # every request while it ran
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
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


def _post(
    conn: http.client.HTTPConnection, url: str, chunk: Sequence[dict[str, Any]], timeout: float, into: TrafficReport
) -> http.client.HTTPConnection:
    """Post one request on ``conn`` and count its answer in ``into``; return the connection to use next
    (a new one after a connection error)."""
    body = json.dumps(chunk[0] if len(chunk) == 1 else {"records": list(chunk)}).encode()
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
    into.latencies_ms.append((time.perf_counter() - started) * 1000)
    into.requests += 1
    into.rows += len(chunk)
    into.statuses[status] += 1
    if status == 200:
        answer = json.loads(payload)
        predictions = answer.get("predictions") or [answer]
        into.prediction_ids += [p["prediction_id"] for p in predictions]
        into.versions[str(answer.get("model_version"))] += 1
    return conn


def _merge(into: TrafficReport, part: TrafficReport) -> None:
    into.requests += part.requests
    into.rows += part.rows
    into.statuses.update(part.statuses)
    into.versions.update(part.versions)
    into.prediction_ids += part.prediction_ids
    into.latencies_ms += part.latencies_ms


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
                conn = _post(conn, url, chunks[index], timeout, local)
        finally:
            conn.close()
            with lock:
                _merge(report, local)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, max(1, len(chunks))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.perf_counter() - started
    return report


class BackgroundTraffic:
    """Single-row (or ``rows_per_request``) predictions from background threads until :meth:`stop`.

    ``records`` are sent round-robin, at most ``rate`` requests per second in all (paced, so the
    traffic leaves the machine's CPUs to the rest of the loop), by ``concurrency`` threads with one
    connection each. Bounded: it stops by itself after ``max_seconds``. :attr:`report` counts every
    request once stopped. ``on_answer(first, prediction_ids)``, if given, is called from the sending
    thread for every answered request: ``first`` is the index in ``records`` of the request's first
    record (e.g. to send that record's label as feedback). A context manager (start on enter, stop on exit).
    """

    def __init__(
        self,
        url: str,
        records: Sequence[dict[str, Any]],
        rate: float = 100.0,
        concurrency: int = 2,
        rows_per_request: int = 1,
        max_seconds: float = 1800.0,
        timeout: float = 10.0,
        on_answer: Callable[[int, list[str]], None] | None = None,
    ) -> None:
        if not records:
            raise ValueError("BackgroundTraffic needs at least one record to send")
        if rate <= 0 or concurrency < 1 or rows_per_request < 1:
            raise ValueError("rate must be > 0, concurrency and rows_per_request >= 1")
        self.url, self.timeout, self.max_seconds, self.on_answer = url, timeout, max_seconds, on_answer
        self._rows_per_request = rows_per_request
        self._chunks = [list(records[i : i + rows_per_request]) for i in range(0, len(records), rows_per_request)]
        self._interval = concurrency / rate  # each thread's pace
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._started = 0.0
        self.report = TrafficReport()
        self._threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(concurrency)]

    def start(self) -> BackgroundTraffic:
        self._started = time.perf_counter()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> TrafficReport:
        """Stop sending, wait for the requests in flight; return the report of everything sent."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        self.report.seconds = time.perf_counter() - self._started
        return self.report

    def _worker(self) -> None:
        conn = _connection(self.url, self.timeout)
        local = TrafficReport()
        deadline = time.monotonic() + self.max_seconds
        due = time.monotonic()
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    index = self._next % len(self._chunks)
                    self._next += 1
                answered = len(local.prediction_ids)
                conn = _post(conn, self.url, self._chunks[index], self.timeout, local)
                if self.on_answer is not None and len(local.prediction_ids) > answered:
                    self.on_answer(index * self._rows_per_request, local.prediction_ids[answered:])
                due = max(due + self._interval, time.monotonic() - self._interval)  # no burst after a slow answer
                self._stop.wait(max(0.0, due - time.monotonic()))
        finally:
            conn.close()
            with self._lock:
                _merge(self.report, local)

    def __enter__(self) -> BackgroundTraffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
