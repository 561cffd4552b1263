"""`ingest_new_data` run by Airflow (`dag.test()`) against the real S3 server on loopback."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from devtools.datasets import to_bytes
from include.continuous_training.ingestion import batch_id_for, read_manifest
from include.continuous_training.storage import get_json, list_objects
from tests.bad_inputs import BAD_INPUTS, good_frame
from tests.integration.conftest import Webhook, asset_events, keys_under, run_dag

DAG_ID = "ingest_new_data"


@pytest.fixture(autouse=True)
def _isolated(empty_bucket, airflow_db):
    """Every test starts from an empty bucket and a migrated metadata DB."""


def _landing_snapshot(s3, settings):
    return {ref.key: ref.etag for ref in list_objects(s3, settings.s3_bucket, settings.landing_prefix)}


def test_a_good_batch_is_curated_recorded_and_announced(dagbag, s3, settings):
    frame = good_frame(rows=1500, seed=21)
    key = settings.landing_prefix + "2026-11-21/cards.csv"
    s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=to_bytes(frame, "csv"))
    events_before = len(asset_events("curated_batches"))

    outcome = run_dag(dagbag, DAG_ID)

    assert outcome.state == "success"
    assert outcome.states_of("ingest_batch") == {0: "success"}
    assert outcome.rendered_map_index[("ingest_batch", 0)] == key
    [entry] = read_manifest(s3, settings)
    assert entry.status == "ingested"
    assert entry.source.key == key
    assert entry.good_rows == 1500
    assert entry.curated_uri is not None
    curated_key = entry.curated_uri.removeprefix(f"s3://{settings.s3_bucket}/")
    curated = pd.read_parquet(io.BytesIO(s3.get_object(Bucket=settings.s3_bucket, Key=curated_key)["Body"].read()))
    assert len(curated) == 1500
    assert curated["transaction_id"].tolist() == frame["transaction_id"].tolist()
    events = asset_events("curated_batches")[events_before:]
    assert events == [
        {
            "batch_id": entry.batch_id,
            "rows": 1500,
            "bad_rows": 0,
            "uri": entry.curated_uri,
            "source_key": key,
            "flags": [],
            "future_rows": 0,
            "old_rows": entry.old_rows,  # November data: old by now, counted (test_event_times.py pins the figures)
            "dataset_version": "transactions/batch@v1",  # the first batch of an empty bucket
        }
    ]
    assert entry.dataset_version == "transactions/batch@v1"


def test_an_airflow_variable_reaches_the_ingest_task(dagbag, s3, settings, monkeypatch):
    """A setting stored as an Airflow Variable (metadata DB, no environment variable) steers the real task."""
    from airflow.models.variable import Variable

    monkeypatch.delenv("CT_CURATED_PREFIX", raising=False)
    Variable.set("CT_CURATED_PREFIX", "curated-from-variable/")
    try:
        key = settings.landing_prefix + "2026-11-22/cards.csv"
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=to_bytes(good_frame(rows=300, seed=5), "csv"))

        assert run_dag(dagbag, DAG_ID).state == "success"

        [entry] = read_manifest(s3, settings)
        assert entry.curated_uri is not None
        assert entry.curated_uri.startswith(f"s3://{settings.s3_bucket}/curated-from-variable/batch_id=")
        assert keys_under(s3, settings.s3_bucket, settings.curated_prefix) == []
    finally:
        Variable.delete("CT_CURATED_PREFIX")


def test_nothing_new_skips_the_run_instead_of_failing(dagbag, s3, settings):
    outcome = run_dag(dagbag, DAG_ID)
    assert outcome.state == "success"
    assert outcome.states_of("wait_for_new_data") == {-1: "skipped"}
    assert keys_under(s3, settings.s3_bucket, settings.curated_prefix) == []


def test_the_same_object_uploaded_twice_is_ingested_once(dagbag, s3, settings):
    body = to_bytes(good_frame(rows=300, seed=22), "parquet")
    key = settings.landing_prefix + "twice.parquet"
    s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)
    first = run_dag(dagbag, DAG_ID)
    s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)  # same bytes again: same ETag
    second = run_dag(dagbag, DAG_ID)

    assert first.states_of("ingest_batch") == {0: "success"}
    assert second.states_of("wait_for_new_data") == {-1: "skipped"}
    assert len(read_manifest(s3, settings)) == 1
    assert len(keys_under(s3, settings.s3_bucket, settings.curated_prefix)) == 1


def test_every_bad_input_is_quarantined_with_a_report_and_a_clear_failure(dagbag, s3, settings):
    """All catalogue cases and one good file land together: one mapped task each."""
    good_key = settings.landing_prefix + "good.csv"
    s3.put_object(Bucket=settings.s3_bucket, Key=good_key, Body=to_bytes(good_frame(), "csv"))
    bad_keys = {}
    for bad in BAD_INPUTS:
        key = f"{settings.landing_prefix}bad/{bad.case}/{bad.filename}"
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=bad.build(good_frame()))
        bad_keys[key] = bad
    landing_before = _landing_snapshot(s3, settings)

    outcome = run_dag(dagbag, DAG_ID)

    assert outcome.state == "failed"
    by_key = {outcome.rendered_map_index[("ingest_batch", i)]: s for i, s in outcome.states_of("ingest_batch").items()}
    assert by_key[good_key] == "success"
    assert {k: by_key[k] for k in bad_keys} == dict.fromkeys(bad_keys, "failed")
    tries = {
        outcome.rendered_map_index[("ingest_batch", i)]: n for (t, i), n in outcome.tries.items() if t == "ingest_batch"
    }
    assert {k: tries[k] for k in bad_keys} == dict.fromkeys(bad_keys, 1), "bad data fails without retries"
    assert _landing_snapshot(s3, settings) == landing_before, "landing/ must never change"

    manifest = {entry.source.key: entry for entry in read_manifest(s3, settings)}
    curated = keys_under(s3, settings.s3_bucket, settings.curated_prefix)
    assert curated == [f"{settings.curated_prefix}batch_id={manifest[good_key].batch_id}/data.parquet"]
    for key, bad in bad_keys.items():
        entry = manifest[key]
        assert entry.status == "quarantined", bad.case
        assert bad.reason in entry.reason, bad.case
        assert entry.reason.startswith(f"{key}: ")
        assert "landing untouched, nothing curated" in entry.reason
        folder = f"{settings.quarantine_prefix}{batch_id_for(entry.source)}/"
        stored = keys_under(s3, settings.s3_bucket, folder)
        assert f"{folder}report.json" in stored, bad.case
        copy = [k for k in stored if not k.endswith("report.json")]
        assert len(copy) == 1, bad.case
        original = s3.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()
        assert s3.get_object(Bucket=settings.s3_bucket, Key=copy[0])["Body"].read() == original


def test_a_quarantined_batch_reaches_the_alert_webhook(dagbag, s3, settings, monkeypatch):
    hook = Webhook()
    monkeypatch.setenv("CT_ALERT_WEBHOOK_URL", hook.url)  # read when the failure callback fires
    try:
        bad = BAD_INPUTS[0]
        key = f"{settings.landing_prefix}bad/{bad.filename}"
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=bad.build(good_frame()))

        outcome = run_dag(dagbag, DAG_ID)

        assert outcome.state == "failed"
        [alert] = hook.texts()
        assert "Task failed: ingest_new_data.ingest_batch" in alert
        assert key in alert
        assert "landing untouched, nothing curated" in alert
    finally:
        hook.close()


def test_a_few_bad_rows_go_to_quarantine_and_the_rest_is_curated(dagbag, s3, settings):
    frame = good_frame(rows=1000, seed=23)
    frame.loc[[10, 20], "merchant_category"] = "casino"
    key = settings.landing_prefix + "mostly_good.parquet"
    s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=to_bytes(frame, "parquet"))

    outcome = run_dag(dagbag, DAG_ID)

    assert outcome.state == "success"
    [entry] = read_manifest(s3, settings)
    assert (entry.status, entry.good_rows, entry.bad_rows) == ("ingested", 998, 2)
    folder = f"{settings.quarantine_prefix}{entry.batch_id}/"
    rows = pd.read_parquet(
        io.BytesIO(s3.get_object(Bucket=settings.s3_bucket, Key=folder + "rows.parquet")["Body"].read())
    )
    assert rows["transaction_id"].tolist() == frame.loc[[10, 20], "transaction_id"].tolist()
    assert entry.report_uri == settings.s3_uri(folder + "report.json")


def test_odd_but_valid_files_and_odd_keys_are_ingested_exactly_once(dagbag, s3, settings):
    """A batch with one class only, extreme outliers in a few rows, a 20-row batch, and keys with spaces,
    unicode, ``..`` and ``%``: each ingested once, none flagged by a distribution guard, every object we
    write stays under its own prefix."""
    frame = good_frame(rows=400, seed=21)
    single_class = frame.assign(is_fraud=0)
    outliers = frame.copy()
    outliers.loc[[3, 7], "amount"] = 1e12  # beyond the suite's range: row-level, within the budget
    files = {
        "single class.csv": to_bytes(single_class, "csv"),
        "outliers.parquet": to_bytes(outliers, "parquet"),
        "ünïcödé/Überweisung 2026.csv": to_bytes(good_frame(rows=300, seed=22), "csv"),
        "../escape/../../x.csv": to_bytes(good_frame(rows=300, seed=23), "csv"),
        "100%/a b+c.parquet": to_bytes(good_frame(rows=300, seed=24), "parquet"),
        "tiny.csv": to_bytes(good_frame(rows=20, seed=25), "csv"),  # under CT_DISTRIBUTION_GUARD_MIN_ROWS
    }
    for name, body in files.items():
        s3.put_object(Bucket=settings.s3_bucket, Key=settings.landing_prefix + name, Body=body)
    landing_before = _landing_snapshot(s3, settings)

    first = run_dag(dagbag, DAG_ID)
    again = run_dag(dagbag, DAG_ID)  # nothing new: skipped, nothing written twice

    assert first.state == "success", first.task_states
    assert set(first.states_of("ingest_batch").values()) == {"success"}
    assert again.states_of("wait_for_new_data") == {-1: "skipped"}
    assert _landing_snapshot(s3, settings) == landing_before
    manifest = {entry.source.key: entry for entry in read_manifest(s3, settings)}
    assert set(manifest) == {settings.landing_prefix + name for name in files}
    assert all(entry.status == "ingested" for entry in manifest.values())
    assert {entry.source.key: entry.flags for entry in manifest.values()} == {key: [] for key in manifest}
    assert manifest[settings.landing_prefix + "single class.csv"].good_rows == 400
    assert manifest[settings.landing_prefix + "outliers.parquet"].bad_rows == 2
    written = [
        key
        for prefix in (settings.curated_prefix, settings.quarantine_prefix, settings.manifest_prefix)
        for key in keys_under(s3, settings.s3_bucket, prefix)
    ]
    assert len(keys_under(s3, settings.s3_bucket, settings.curated_prefix)) == len(files)
    for key in written:
        assert ".." not in key.split("/"), key
        assert key.isascii(), key  # derived keys are built from ids, not from the landing name


def test_a_constant_feature_is_curated_flagged_and_alerted_by_default(dagbag, s3, settings, monkeypatch):
    """`amount` = 42.0 on every row: valid row by row, so curated, but flagged everywhere a person looks."""
    hook = Webhook()
    monkeypatch.setenv("CT_ALERT_WEBHOOK_URL", hook.url)
    try:
        key = settings.landing_prefix + "2026-11-23/defaulted amounts.csv"
        s3.put_object(
            Bucket=settings.s3_bucket, Key=key, Body=to_bytes(good_frame(rows=1000, seed=26).assign(amount=42.0), "csv")
        )
        landing_before = _landing_snapshot(s3, settings)
        events_before = len(asset_events("curated_batches"))

        outcome = run_dag(dagbag, DAG_ID)

        assert outcome.state == "success"
        assert outcome.states_of("ingest_batch") == {0: "success"}
        [entry] = read_manifest(s3, settings)
        assert (entry.status, entry.good_rows, entry.bad_rows) == ("ingested", 1000, 0)
        [flag] = entry.flags
        assert (flag["column"], flag["check"], flag["statistic"], flag["observed"]) == ("amount", "spread", "stdev", 0)
        assert flag["expected"]["min"] > 0
        assert "flagged by distribution guards: column `amount`: stdev 0" in entry.reason
        [event] = asset_events("curated_batches")[events_before:]
        assert event["flags"] == entry.flags
        report_key = f"{settings.reports_prefix}ingest/{entry.batch_id}/report.json"
        assert entry.report_uri == settings.s3_uri(report_key)
        report = get_json(s3, settings.s3_bucket, report_key)
        assert report is not None
        assert report["verdict"] == "ingested_flagged"
        assert report["distribution_guards"] == {"status": "evaluated", "fired": entry.flags}
        assert keys_under(s3, settings.s3_bucket, settings.quarantine_prefix) == []
        assert entry.curated_uri is not None
        curated_key = entry.curated_uri.removeprefix(f"s3://{settings.s3_bucket}/")
        curated = pd.read_parquet(io.BytesIO(s3.get_object(Bucket=settings.s3_bucket, Key=curated_key)["Body"].read()))
        assert len(curated) == 1000
        assert set(curated["amount"]) == {42.0}
        [alert] = hook.texts()
        assert f"Batch curated but flagged: {key}" in alert
        assert "column `amount`: stdev 0 (expected >= " in alert
        assert entry.curated_uri in alert
        assert settings.s3_uri(report_key) in alert
        assert _landing_snapshot(s3, settings) == landing_before
    finally:
        hook.close()


def test_a_constant_feature_is_quarantined_with_the_quarantine_setting(dagbag, s3, settings, monkeypatch):
    hook = Webhook()
    monkeypatch.setenv("CT_ALERT_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("CT_DISTRIBUTION_GUARD_ACTION", "quarantine")
    try:
        key = settings.landing_prefix + "2026-11-23/defaulted.parquet"
        body = to_bytes(good_frame(rows=1000, seed=27).assign(amount=42.0), "parquet")
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)

        outcome = run_dag(dagbag, DAG_ID)

        assert outcome.state == "failed"
        assert outcome.states_of("ingest_batch") == {0: "failed"}
        [entry] = read_manifest(s3, settings)
        assert entry.status == "quarantined"
        assert entry.reason.startswith(
            f"{key}: distribution guards fired (CT_DISTRIBUTION_GUARD_ACTION=quarantine): column `amount`: stdev 0"
        )
        assert [flag["column"] for flag in entry.flags] == ["amount"]
        assert keys_under(s3, settings.s3_bucket, settings.curated_prefix) == []
        folder = f"{settings.quarantine_prefix}{entry.batch_id}/"
        assert s3.get_object(Bucket=settings.s3_bucket, Key=folder + "defaulted.parquet")["Body"].read() == body
        report = get_json(s3, settings.s3_bucket, folder + "report.json")
        assert report is not None
        assert report["distribution_guards"]["fired"] == entry.flags
        [alert] = hook.texts()  # the failure alert; no second "flagged" alert
        assert "Task failed: ingest_new_data.ingest_batch" in alert
        assert "distribution guards fired" in alert
    finally:
        hook.close()
