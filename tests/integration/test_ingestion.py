"""The ingest library against the real S3 server: manifest, claims, versions and races."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from devtools.datasets import to_bytes
from include.continuous_training.ingestion import (
    AlreadyClaimed,
    BatchQuarantined,
    batch_id_for,
    claim_object,
    find_new_objects,
    ingest_object,
    read_manifest,
)
from include.continuous_training.storage import ObjectRef, PreconditionFailed, s3_client
from tests.bad_inputs import good_frame
from tests.integration.conftest import keys_under


@pytest.fixture(autouse=True)
def _isolated(empty_bucket):
    """Every test starts from an empty bucket."""


def _land(s3, settings, name: str, body: bytes) -> ObjectRef:
    key = settings.landing_prefix + name
    s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)
    [ref] = [r for r in find_new_objects(s3, settings) if r.key == key]
    return ref


def test_new_objects_are_offered_until_they_have_an_outcome(s3, settings):
    ref = _land(s3, settings, "a.csv", to_bytes(good_frame(), "csv"))
    _land(s3, settings, "b.parquet", to_bytes(good_frame(seed=3), "parquet"))
    assert [r.key for r in find_new_objects(s3, settings)] == ["landing/a.csv", "landing/b.parquet"]
    assert len(find_new_objects(s3, settings, limit=1)) == 1

    result = ingest_object(s3, settings, ref, run_id="run-1")

    assert result.status == "ingested"
    assert [r.key for r in find_new_objects(s3, settings)] == ["landing/b.parquet"]


def test_rerunning_an_ingested_object_writes_nothing_new(s3, settings):
    ref = _land(s3, settings, "a.csv", to_bytes(good_frame(), "csv"))
    first = ingest_object(s3, settings, ref, run_id="run-1")
    assert first.curated_uri is not None
    curated_key = first.curated_uri.removeprefix(f"s3://{settings.s3_bucket}/")
    written_at = s3.head_object(Bucket=settings.s3_bucket, Key=curated_key)["LastModified"]

    again = ingest_object(s3, settings, ref, run_id="run-2")

    assert again == first
    assert s3.head_object(Bucket=settings.s3_bucket, Key=curated_key)["LastModified"] == written_at
    assert len(read_manifest(s3, settings)) == 1


def test_an_overwritten_landing_object_is_a_new_version(s3, settings):
    first = _land(s3, settings, "daily.csv", to_bytes(good_frame(seed=1), "csv"))
    ingest_object(s3, settings, first, run_id="run-1")
    second = _land(s3, settings, "daily.csv", to_bytes(good_frame(seed=2), "csv"))

    assert second.etag != first.etag
    assert batch_id_for(second) != batch_id_for(first)
    ingest_object(s3, settings, second, run_id="run-2")
    assert len(keys_under(s3, settings.s3_bucket, settings.curated_prefix)) == 2


def test_an_object_changed_after_listing_is_not_read_under_the_old_identity(s3, settings):
    listed = _land(s3, settings, "racy.csv", to_bytes(good_frame(seed=1), "csv"))
    s3.put_object(Bucket=settings.s3_bucket, Key=listed.key, Body=to_bytes(good_frame(seed=2), "csv"))

    with pytest.raises(PreconditionFailed, match="changed since it was listed"):
        ingest_object(s3, settings, listed, run_id="run-1")
    assert keys_under(s3, settings.s3_bucket, settings.curated_prefix) == []


def test_two_runs_racing_for_one_object_ingest_it_once(s3, settings):
    """Real concurrency: two threads, two S3 clients; both send their conditional claim at the same
    moment (a barrier just before the request leaves), so the claim is what decides: one wins."""
    import threading

    ref = _land(s3, settings, "contested.parquet", to_bytes(good_frame(rows=3000), "parquet"))
    both_ready = threading.Barrier(2, timeout=30)
    claims_sent: list[str] = []

    def racing_client(run_id: str):
        client = s3_client(settings)

        def before_send(request, **_):
            if "If-None-Match" in request.headers and "/claims/" in request.url:
                both_ready.wait()  # neither claim leaves before the other is ready to leave too
                claims_sent.append(run_id)

        client.meta.events.register("before-send.s3.PutObject", before_send)
        return client

    def attempt(run_id: str) -> str:
        try:
            ingest_object(racing_client(run_id), settings, ref, run_id=run_id)
        except AlreadyClaimed:
            return "claimed-elsewhere"
        return "ingested"

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = sorted(pool.map(attempt, ["run-a", "run-b"]))

    assert sorted(claims_sent) == ["run-a", "run-b"], "both runs must have sent a claim"
    assert outcomes == ["claimed-elsewhere", "ingested"]
    [entry] = read_manifest(s3, settings)
    assert len(keys_under(s3, settings.s3_bucket, settings.curated_prefix)) == 1
    assert entry.status == "ingested"


def test_a_claim_is_kept_by_its_run_and_refused_to_others(s3, settings):
    ref = _land(s3, settings, "a.csv", to_bytes(good_frame(), "csv"))
    claim_object(s3, settings, ref, "run-1")
    claim_object(s3, settings, ref, "run-1")  # a retry of the same run keeps its claim
    with pytest.raises(AlreadyClaimed, match="run-1"):
        claim_object(s3, settings, ref, "run-2")
    assert find_new_objects(s3, settings) == [], "a live claim is not offered again"


def test_a_stale_claim_is_taken_over(s3, settings):
    ref = _land(s3, settings, "a.csv", to_bytes(good_frame(), "csv"))
    claim_object(s3, settings, ref, "run-that-died")
    assert find_new_objects(s3, settings, claim_timeout=timedelta(0)) == [ref]
    claim_object(s3, settings, ref, "run-2", claim_timeout=timedelta(0))
    with pytest.raises(AlreadyClaimed, match="run-2"):
        claim_object(s3, settings, ref, "run-3")


def _on_takeover(client, action):
    """Run ``action`` just before ``client`` sends a conditional (If-Match) claim takeover."""

    def before_send(request, **_):
        if "If-Match" in request.headers:
            return action()
        return None

    client.meta.events.register("before-send.s3.PutObject", before_send)


def test_a_network_error_during_a_takeover_is_retried_not_taken_for_a_lost_race(s3, settings):
    """Only a refused condition means another run won; a dropped connection must fail the try (Airflow retries)."""
    from botocore.exceptions import EndpointConnectionError

    ref = _land(s3, settings, "a.csv", to_bytes(good_frame(), "csv"))
    claim_object(s3, settings, ref, "run-that-died")
    flaky = s3_client(settings)  # a real client to the real server; the fault is injected at send time

    def drop_connection():
        raise EndpointConnectionError(endpoint_url=settings.s3_endpoint_url or "s3")

    _on_takeover(flaky, drop_connection)
    with pytest.raises(EndpointConnectionError):
        claim_object(flaky, settings, ref, "run-2", claim_timeout=timedelta(0))
    # The claim is still the dead run's: the next try takes it over.
    claim_object(s3, settings, ref, "run-2", claim_timeout=timedelta(0))
    with pytest.raises(AlreadyClaimed, match="run-2"):
        claim_object(s3, settings, ref, "run-3")


def test_a_takeover_lost_to_another_run_is_already_claimed(s3, settings):
    ref = _land(s3, settings, "a.csv", to_bytes(good_frame(), "csv"))
    claim_object(s3, settings, ref, "run-that-died")
    racing = s3_client(settings)

    def other_run_takes_it_first():
        claim_object(s3, settings, ref, "run-fast", claim_timeout=timedelta(0))

    _on_takeover(racing, other_run_takes_it_first)
    with pytest.raises(AlreadyClaimed, match="another run took over the stale claim first"):
        claim_object(racing, settings, ref, "run-slow", claim_timeout=timedelta(0))
    with pytest.raises(AlreadyClaimed, match="run-fast"):
        claim_object(s3, settings, ref, "run-3")


def test_an_oversized_object_is_quarantined_unread(s3, settings):
    from urllib.parse import quote

    small_limit = dataclasses.replace(settings, max_batch_bytes=1000)
    ref = _land(s3, small_limit, "huge.csv", to_bytes(good_frame(), "csv"))
    watched = s3_client(settings)  # a real client; every request it sends is recorded
    sent: list[tuple[str, str]] = []
    watched.meta.events.register("before-send.s3", lambda request, **_: sent.append((request.method, request.url)))

    with pytest.raises(BatchQuarantined, match="over the 1000-byte limit"):
        ingest_object(watched, small_limit, ref, run_id="run-1")
    [entry] = read_manifest(s3, settings)
    assert entry.status == "quarantined"
    assert any(method == "PUT" for method, _ in sent), "the watch saw the claim and the manifest entry"
    landing_url = f"/{settings.s3_bucket}/{quote(ref.key)}"
    assert not [(m, u) for m, u in sent if m == "GET" and u.split("?")[0].endswith(landing_url)], sent
    quarantined = keys_under(s3, settings.s3_bucket, settings.quarantine_prefix)
    copies = [k for k in quarantined if not k.endswith("report.json")]
    assert len(copies) == 1  # a server-side copy: the bytes never came through this client
    original = s3.get_object(Bucket=settings.s3_bucket, Key=ref.key)
    assert original["ETag"].strip('"') == ref.etag
    assert s3.get_object(Bucket=settings.s3_bucket, Key=copies[0])["Body"].read() == original["Body"].read()


def test_a_quarantined_object_fails_the_same_way_on_a_rerun(s3, settings):
    ref = _land(s3, settings, "empty.csv", b"")
    with pytest.raises(BatchQuarantined) as first:
        ingest_object(s3, settings, ref, run_id="run-1")
    with pytest.raises(BatchQuarantined) as second:
        ingest_object(s3, settings, ref, run_id="run-2")
    assert str(first.value) == str(second.value)
    assert "zero-byte object" in str(first.value)
    assert find_new_objects(s3, settings) == []
