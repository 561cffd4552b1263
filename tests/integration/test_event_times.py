"""Time that cannot be poisoned, against the real S3 server: event times checked at ingest, and a
training window that no batch can push (issue 14)."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from devtools.datasets import BatchSpec, generate_batch, to_bytes
from include.continuous_training.ingestion import batch_id_for, find_new_objects, ingest_object, read_manifest
from include.continuous_training.records import TrainingData
from include.continuous_training.storage import list_objects, read_json_uri
from include.continuous_training.training import WindowShrank, assemble_training_data
from tests.integration.conftest import asset_events, keys_under, land_and_curate, run_dag

FUTURE = datetime(2099, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _isolated(empty_bucket):
    """Every test starts from an empty bucket."""


def _landing(s3, settings) -> dict[str, str]:
    return {ref.key: ref.etag for ref in list_objects(s3, settings.s3_bucket, settings.landing_prefix)}


def _put(s3, settings, name: str, frame: pd.DataFrame) -> str:
    key = settings.landing_prefix + name
    s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=to_bytes(frame, "parquet"))
    return key


def _parquet(s3, settings, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(s3.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()))


def test_a_batch_dated_2099_landed_after_normal_batches_is_quarantined_and_landing_untouched(
    dagbag, airflow_db, s3, settings
):
    """Before: curated ("all expectations passed"), and the next window held that batch alone."""
    now = datetime.now(UTC)
    recent = generate_batch(BatchSpec(rows=1500, seed=141, start=now - timedelta(days=1)))
    old = generate_batch(BatchSpec(rows=1500, seed=142, start=now - timedelta(days=40)))
    recent_key, old_key = _put(s3, settings, "recent.parquet", recent), _put(s3, settings, "old.parquet", old)
    events_before = len(asset_events("curated_batches"))
    assert run_dag(dagbag, "ingest_new_data").state == "success"
    # Old rows are counted, not rejected: in the done entry and the Asset event.
    entries = {entry.source.key: entry for entry in read_manifest(s3, settings)}
    assert (entries[recent_key].old_rows, entries[old_key].old_rows) == (0, 1500)
    assert entries[old_key].good_rows == 1500
    assert "1500 of 1500 rows have event times before" in entries[old_key].reason
    bounds = entries[old_key].event_times or {}
    assert bounds["earliest"] == old["event_time"].min().tz_convert(None).isoformat()
    assert bounds["oldest_in_window"] > bounds["latest"]  # all of it older than the window at ingest
    events = {e["source_key"]: e for e in asset_events("curated_batches")[events_before:]}
    assert (events[recent_key]["old_rows"], events[old_key]["old_rows"]) == (0, 1500)

    poisoned_key = _put(s3, settings, "2099.parquet", generate_batch(BatchSpec(rows=1500, seed=143, start=FUTURE)))
    landing_before = _landing(s3, settings)
    curated_before = keys_under(s3, settings.s3_bucket, settings.curated_prefix)

    outcome = run_dag(dagbag, "ingest_new_data")

    assert outcome.state == "failed"
    assert outcome.states_of("ingest_batch") == {0: "failed"}  # failed at once: no retry
    assert outcome.rendered_map_index[("ingest_batch", 0)] == poisoned_key
    entry = {e.source.key: e for e in read_manifest(s3, settings)}[poisoned_key]
    assert entry.status == "quarantined"
    assert entry.future_rows == 1500
    assert entry.reason.startswith(f"{poisoned_key}: 1500 failing row checks (100.0%) exceed the bad-row budget")
    assert "1500 of 1500 rows have event times after " in entry.reason
    assert "(ingest time + CT_MAX_FUTURE_SKEW_MINUTES=60; e.g. '2099-01-01T" in entry.reason
    assert entry.reason.endswith("landing untouched, nothing curated")
    assert "\n" not in entry.reason
    folder = f"{settings.quarantine_prefix}{batch_id_for(entry.source)}/"
    copy = s3.get_object(Bucket=settings.s3_bucket, Key=f"{folder}2099.parquet")["Body"].read()
    assert copy == s3.get_object(Bucket=settings.s3_bucket, Key=poisoned_key)["Body"].read()
    report = json.loads(s3.get_object(Bucket=settings.s3_bucket, Key=f"{folder}report.json")["Body"].read())
    assert report["event_times"]["future_rows"] == 1500
    assert report["event_times"]["latest"].startswith("2099-01-01")
    assert _landing(s3, settings) == landing_before
    assert keys_under(s3, settings.s3_bucket, settings.curated_prefix) == curated_before

    # The next window ends with the recent batch; the old one is out and says why.
    data = assemble_training_data(s3, settings)
    manifest = read_json_uri(s3, settings, data["manifest_uri"])
    assert manifest["window"]["end"] == recent["event_time"].max().tz_convert(None).isoformat()
    assert sum(data["rows"].values()) == 1500
    reasons = {b["source_key"]: b.get("out_reason") for b in manifest["batches"]}
    assert reasons == {recent_key: None, old_key: "no events in window: all before its start"}


def test_a_few_future_rows_within_the_budget_are_quarantined_and_the_rest_curated(s3, settings):
    ingested_at = datetime(2026, 11, 20, 12, tzinfo=UTC)
    frame = generate_batch(BatchSpec(rows=1000, seed=144, start=datetime(2026, 11, 19, tzinfo=UTC)))
    frame.loc[3, "event_time"] = FUTURE
    frame.loc[7, "event_time"] = pd.Timestamp("2026-11-21", tz="UTC")  # 12 h ahead of the ingest time
    frame.loc[9, "event_time"] = pd.Timestamp("2026-11-20T12:59", tz="UTC")  # 59 min: within the skew
    key = _put(s3, settings, "mostly_now.parquet", frame)
    [ref] = find_new_objects(s3, settings)
    landing_before = _landing(s3, settings)

    result = ingest_object(s3, settings, ref, run_id="run-1", ingested_at=ingested_at)

    assert (result.status, result.good_rows, result.bad_rows, result.future_rows) == ("ingested", 998, 2, 2)
    assert "2 of 1000 rows have event times after 2026-11-20T13:00:00" in result.reason
    folder = f"{settings.quarantine_prefix}{result.batch_id}/"
    rows = _parquet(s3, settings, f"{folder}rows.parquet")
    assert rows["transaction_id"].tolist() == frame.loc[[3, 7], "transaction_id"].tolist()
    assert result.curated_uri is not None
    curated = _parquet(s3, settings, result.curated_uri.removeprefix(f"s3://{settings.s3_bucket}/"))
    assert len(curated) == 998
    assert set(curated["transaction_id"]) == set(frame["transaction_id"]) - set(rows["transaction_id"])
    assert curated["event_time"].max() == pd.Timestamp("2026-11-20T12:59")
    report = read_json_uri(s3, settings, str(result.report_uri))
    assert report["event_times"]["future_rows"] == 2
    assert report["event_times"]["ingested_at"] == "2026-11-20T12:00:00"
    assert _landing(s3, settings) == landing_before == {key: ref.etag}


def test_old_rows_are_curated_counted_and_logged(s3, settings, caplog):
    frame = generate_batch(BatchSpec(rows=300, seed=145, start=datetime(2026, 10, 1, tzinfo=UTC)))
    _put(s3, settings, "late.parquet", frame)
    [ref] = find_new_objects(s3, settings)

    with caplog.at_level(logging.WARNING, logger="include.continuous_training.ingestion"):
        result = ingest_object(s3, settings, ref, run_id="run-1", ingested_at=datetime(2026, 11, 20, tzinfo=UTC))

    assert (result.status, result.good_rows, result.bad_rows, result.old_rows) == ("ingested", 300, 0, 300)
    assert result.report_uri is None  # nothing quarantined
    assert result.event_times == {
        "ingested_at": "2026-11-20T00:00:00",
        "latest_allowed": "2026-11-20T01:00:00",
        "oldest_in_window": "2026-10-21T00:00:00",
        "earliest": frame["event_time"].min().tz_convert(None).isoformat(),
        "latest": frame["event_time"].max().tz_convert(None).isoformat(),
        "future_rows": 0,
        "old_rows": 300,
    }
    assert read_manifest(s3, settings) == [result]
    [warning] = [r for r in caplog.records if r.name == "include.continuous_training.ingestion"]
    assert "landing/late.parquet: curated; 300 of 300 rows have event times before 2026-10-21T00:00:00" in (
        warning.getMessage()
    )


def test_a_curated_batch_after_the_anchor_does_not_move_the_window_and_the_manifest_says_why(s3, settings, caplog):
    """A batch dated 2099 that was curated before these checks existed (here: with the tolerance off)."""
    normal = {
        f"nov{day}.parquet": generate_batch(
            BatchSpec(rows=2000, seed=150 + day, start=datetime(2026, 11, day, tzinfo=UTC))
        )
        for day in (1, 2, 3)
    }
    land_and_curate(s3, settings, normal)
    unguarded = dataclasses.replace(settings, max_future_skew_minutes=1e12)
    land_and_curate(s3, unguarded, {"2099.parquet": generate_batch(BatchSpec(rows=2000, seed=154, start=FUTURE))})
    newest_normal = normal["nov3.parquet"]["event_time"].max().tz_convert(None)

    with caplog.at_level(logging.INFO, logger="include.continuous_training.training"):
        at_run_time = assemble_training_data(s3, settings, not_after=datetime(2026, 12, 1, tzinfo=UTC))

    manifest = read_json_uri(s3, settings, at_run_time["manifest_uri"])
    assert manifest["window"]["end"] == newest_normal.isoformat()
    assert manifest["window"]["start"] == (newest_normal - pd.Timedelta(days=30)).isoformat()
    assert manifest["window"]["not_after"] == "2026-12-01T00:00:00"
    assert sum(at_run_time["rows"].values()) == 6000
    batches = {b["source_key"]: b for b in manifest["batches"]}
    poisoned = batches[settings.landing_prefix + "2099.parquet"]
    assert poisoned["in_window"] is False
    assert poisoned["out_reason"] == "all events after the window end"
    assert (poisoned["rows"], poisoned["rows_in_window"], poisoned["rows_after_end"]) == (2000, 0, 2000)
    assert all(b["in_window"] and b["rows_in_window"] == 2000 for k, b in batches.items() if "nov" in k)
    logged = [r.getMessage() for r in caplog.records]
    assert any(
        f"training window {manifest['window']['start']} .. {manifest['window']['end']} (30 days)" in line
        and "at or before 2026-12-01T00:00:00: 6000 rows from 3 of 4 curated batches; 2000 rows after" in line
        for line in logged
    ), logged
    assert any("(landing/2099.parquet) is out of the window: all events after the window end" in m for m in logged)
    holdout = _parquet(s3, settings, at_run_time["holdout_uri"].removeprefix(f"s3://{settings.s3_bucket}/"))
    assert holdout["event_time"].max() == newest_normal
    # Without a run time (a library call), "now" is the bound: the same rows, the same window, the same hash.
    assert assemble_training_data(s3, settings)["data_hash"] == at_run_time["data_hash"]


def _two_batches_a_month_apart(s3, settings) -> tuple[TrainingData, str]:
    """8,000 rows 40 days ago, trained on; then 1,000 rows of the last days: the window slides past the first."""
    now = datetime.now(UTC)
    land_and_curate(
        s3, settings, {"a.parquet": generate_batch(BatchSpec(rows=8000, seed=161, start=now - timedelta(days=40)))}
    )
    first = assemble_training_data(s3, settings)
    land_and_curate(
        s3, settings, {"b.parquet": generate_batch(BatchSpec(rows=1000, seed=162, start=now - timedelta(days=2)))}
    )
    return first, first["manifest_uri"]


def test_a_window_that_lost_most_rows_fails_with_the_figures_and_writes_nothing(s3, settings):
    first, first_manifest = _two_batches_a_month_apart(s3, settings)
    assert sum(first["rows"].values()) == 8000
    training_before = keys_under(s3, settings.s3_bucket, settings.training_prefix)

    with pytest.raises(WindowShrank) as failure:
        assemble_training_data(s3, settings)

    message = str(failure.value)
    assert "holds 1,000 rows, the previous training had 8,000 (12%)" in message
    assert "below CT_WINDOW_SHRINK_TOLERANCE=0.5" in message
    assert first_manifest in message
    assert f"{settings.landing_prefix}a.parquet: no events in window: all before its start" in message
    assert "CT_WINDOW_SHRINK_ACTION=warn" in message
    assert "\n" not in message
    assert keys_under(s3, settings.s3_bucket, settings.training_prefix) == training_before


def test_with_the_warn_setting_a_shrunk_window_trains_and_says_so_loudly(s3, settings, caplog):
    _two_batches_a_month_apart(s3, settings)
    warn = dataclasses.replace(settings, window_shrink_action="warn")

    with caplog.at_level(logging.INFO, logger="include.continuous_training.training"):
        data = assemble_training_data(s3, warn)

    assert sum(data["rows"].values()) == 1000
    [loud] = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.endswith(".training")]
    assert "WINDOW SHRANK" in loud.getMessage()
    assert "holds 1,000 rows, the previous training had 8,000 (12%)" in loud.getMessage()
    assert any(
        "training window " in r.getMessage() and "1000 rows from 1 of 2" in r.getMessage() for r in caplog.records
    )
    manifest = read_json_uri(s3, warn, data["manifest_uri"])
    assert manifest["window_check"]["verdict"] == "shrank"
    assert (manifest["window_check"]["rows"], manifest["window_check"]["previous_rows"]) == (1000, 8000)

    # The shrunk window is the baseline for the next new data: 1,000 more rows make it grow again.
    now = datetime.now(UTC)
    land_and_curate(
        s3, settings, {"c.parquet": generate_batch(BatchSpec(rows=1000, seed=163, start=now - timedelta(days=1)))}
    )
    grown = read_json_uri(s3, settings, assemble_training_data(s3, settings)["manifest_uri"])
    assert grown["window_check"]["verdict"] == "ok"
    assert grown["window_check"]["previous_manifest_uri"] == data["manifest_uri"]
    assert "holds 2,000 rows, the previous training had 1,000 (200%)" in grown["window_check"]["reason"]


def test_through_the_dag_a_shrunk_window_fails_the_first_task_at_once_and_alerts(s3, settings, airflow_db, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import DAGS_FOLDER
    from tests.integration.conftest import Webhook

    _two_batches_a_month_apart(s3, settings)  # the previous training: 8,000 rows; now 1,000 in the window
    hook = Webhook()
    try:
        monkeypatch.setenv("CT_ALERT_WEBHOOK_URL", hook.url)
        # Its own model and no deployment, so that a regression that lets the run go on touches nothing shared.
        suffix = f"shrink-{datetime.now(UTC):%H%M%S%f}"
        monkeypatch.setenv("CT_MLFLOW_EXPERIMENT", suffix)
        monkeypatch.setenv("CT_MODEL_NAME", suffix)
        monkeypatch.setenv("CT_DEPLOYMENT_TARGET", "none")
        outcome = run_dag(DagBag(dag_folder=str(DAGS_FOLDER)), "train_and_deploy")
        texts = hook.texts()
    finally:
        hook.close()

    assert outcome.state == "failed"
    assert outcome.states_of("assemble_training_data") == {-1: "failed"}  # DataError: no retry
    assert outcome.states_of("train_challenger") == {-1: "upstream_failed"}
    [alert] = texts
    assert "Task failed: train_and_deploy.assemble_training_data" in alert
    assert "holds 1,000 rows, the previous training had 8,000 (12%)" in alert


def test_of_two_manifests_written_in_the_same_second_the_later_is_the_previous_training(s3, settings):
    """S3 keeps whole seconds: a tie on ``LastModified`` is broken by the manifest's own ``written_at``."""
    from include.continuous_training.storage import put_json
    from include.continuous_training.training import latest_training_manifest

    def tied() -> bool:
        """Both manifests written just past a second boundary, so S3 gives them the same LastModified."""
        time.sleep(1 - time.time() % 1 + 0.01)
        for name in ("aaa-older", "zzz-newer"):  # the earlier write comes first in a listing
            put_json(
                s3,
                settings.s3_bucket,
                f"{settings.training_prefix}{name}/manifest.json",
                {"data_hash": name, "written_at": datetime.now(UTC).isoformat()},
            )
        listed = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=settings.training_prefix)["Contents"]
        return len({o["LastModified"] for o in listed if o["Key"].endswith("/manifest.json")}) == 1

    assert any(tied() for _ in range(5))  # the tie at issue (a loaded machine may need another try)

    found = latest_training_manifest(s3, settings)

    assert found is not None
    uri, manifest = found
    assert manifest["data_hash"] == "zzz-newer"
    assert uri.endswith("zzz-newer/manifest.json")
