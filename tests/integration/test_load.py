"""Sustained load with two model swaps: nothing fails, memory stays flat, every answer is logged (none dropped).

Marked ``load`` (``-m "not load"`` leaves it out of a quick loop); CI runs it. ``CT_LOAD_SECONDS``
(default 180) and ``CT_LOAD_RATE`` (default 1,000 requests a second) size it.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import secrets
import subprocess
import time
import uuid
from datetime import UTC, datetime

import pytest

from devtools.datasets import BatchSpec, generate_batch
from devtools.traffic import TrafficReport, generated_records, send
from include.continuous_training.registry import promote_champion, register_challenger, tracking_client
from include.continuous_training.training import assemble_training_data, train_challenger
from tests.integration.conftest import Endpoint, land_and_curate

SECONDS = int(os.environ.get("CT_LOAD_SECONDS", "180"))
RATE = int(os.environ.get("CT_LOAD_RATE", "1000"))
pytestmark = [pytest.mark.load, pytest.mark.timeout(SECONDS + 600)]


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _workers(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if "spawn_main" in open(f"/proc/{p}/cmdline").read()]


def _metric(endpoint: Endpoint, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(endpoint.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


@pytest.fixture
def two_versions(services, empty_bucket, tmp_path):
    from include.continuous_training.config import load_settings
    from include.continuous_training.storage import s3_client

    name = f"load-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(load_settings(), model_name=name, mlflow_experiment=name)
    s3 = s3_client(settings)
    client = tracking_client(settings)
    versions = []
    for day, seed in ((1, 81), (2, 82)):
        start = datetime(2026, 11, day, tzinfo=UTC)
        batch = generate_batch(BatchSpec(rows=4000, seed=seed, start=start))
        land_and_curate(s3, settings, {f"load{day}.parquet": batch})
        model = train_challenger(s3, settings, assemble_training_data(s3, settings), dag_run_id=f"{name}-{day}")
        versions.append(register_challenger(client, settings, model["run_id"], model["model_id"], {}))
    promote_champion(client, settings, versions[0])
    env = {
        "CT_MODEL_NAME": name,
        "CT_SERVING_ADMIN_TOKEN": secrets.token_urlsafe(16),
        "CT_INFERENCE_FLUSH_SECONDS": "1",
    }
    endpoint = Endpoint.start(tmp_path / "serving", env)
    deadline = time.monotonic() + 60
    while endpoint.served_version() != versions[0] and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        yield settings, s3, endpoint, versions
    finally:
        endpoint.stop()


def test_sustained_load_with_two_swaps_loses_nothing(two_versions):
    settings, s3, endpoint, (v1, v2) = two_versions
    records = generated_records(RATE, seed=83)
    total = TrafficReport()
    swaps = {SECONDS // 3: v2, 2 * SECONDS // 3: v1}
    rss_before: dict[int, float] = {}
    started = time.monotonic()
    for second in range(SECONDS):
        if second == 10:  # after warm-up: imports done, buffers and caches at their working size
            rss_before = {pid: _rss_mib(pid) for pid in _workers(endpoint.pid)}
        if second in swaps:
            status, payload = endpoint.post("/admin/reload", {"version": swaps[second]}, token=endpoint.token)
            assert status == 200, payload
        tick = send(endpoint.url, records, rows_per_request=1, concurrency=4)
        total.requests += tick.requests
        total.statuses.update(tick.statuses)
        total.versions.update(tick.versions)
        total.prediction_ids += tick.prediction_ids
        time.sleep(max(0.0, started + second + 1 - time.monotonic()))  # paced: RATE requests per second
    elapsed = time.monotonic() - started
    rss_after = {pid: _rss_mib(pid) for pid in _workers(endpoint.pid)}

    assert total.requests == SECONDS * RATE
    assert total.failed == 0, dict(total.statuses)
    assert elapsed < SECONDS * 1.1, f"could not hold {RATE} req/s: {total.requests / elapsed:.0f} req/s"
    assert set(total.versions) == {v1, v2}, total.versions  # both swaps took effect under load
    assert set(rss_after) == set(rss_before), "a worker died or was replaced"
    growth = {pid: rss_after[pid] - rss_before[pid] for pid in rss_before}
    assert all(g < 40 for g in growth.values()), f"worker RSS grew (MiB): {growth}"

    # S3 stays up all along: every successful prediction is in the inference log, none dropped
    # (dropping is for an S3 outage: test_serving.py::test_s3_outage_keeps_serving_and_counts_dropped_rows).
    import pandas as pd

    from include.continuous_training.storage import list_objects

    wanted = set(total.prediction_ids)
    assert len(wanted) == total.ok
    deadline = time.monotonic() + 60
    while True:
        logged = set()
        for ref in list_objects(s3, settings.s3_bucket, settings.inference_prefix):
            body = s3.get_object(Bucket=settings.s3_bucket, Key=ref.key)["Body"].read()
            logged |= set(pd.read_parquet(io.BytesIO(body), columns=["prediction_id"])["prediction_id"]) & wanted
        dropped = _metric(endpoint, "ct_inference_log_rows_dropped_total")
        if len(logged) >= len(wanted) or dropped or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert dropped == 0, f"{dropped:.0f} inference-log rows dropped while S3 was up"
    assert len(logged) == len(wanted), f"{len(wanted) - len(logged)} of {len(wanted)} predictions never logged"
    print(
        f"\n{total.requests} requests in {elapsed:.0f} s ({total.requests / elapsed:.0f} req/s), 0 failed; "
        f"versions {dict(total.versions)}; RSS growth MiB {growth}; logged {len(logged)}, dropped {dropped:.0f}"
    )
