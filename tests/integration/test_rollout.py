"""Progressive delivery at the endpoint: two replicas ("two hosts": separate state directories and
ports, one S3 and one MLflow) follow one desired deployment through direct, shadow and canary steps,
over real HTTP, with real models and the real inference log."""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from devtools.datasets import BatchSpec, generate_batch
from include.continuous_training.deployment import LocalEndpoint
from include.continuous_training.registry import load_model, promote_champion, register_challenger, tracking_client
from include.continuous_training.rollout_state import (
    DeploymentConflict,
    DeploymentStore,
    DesiredDeployment,
    StoredDeployment,
    canary_bucket,
    entity_key,
    utc_now,
)
from include.continuous_training.training import assemble_training_data, train_challenger
from tests.integration.conftest import Endpoint, land_and_curate, register_copy_of_version

STEP_SECONDS = 8.0  # every replica applies a step within this long (typically 1-2 s: the poll interval)
ID = "transaction_id"
VARIANTS = ("champion", "candidate")


@pytest.fixture(scope="module")
def versions(services, s3):
    """v1 (champion), v2 (a good candidate trained on more data: other scores), v3 (a broken candidate)."""
    from include.continuous_training.config import load_settings

    suffix = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(
        load_settings(), model_name=f"rollout-{suffix}", mlflow_experiment=f"rollout-{suffix}"
    )
    client = tracking_client(settings)
    found = []
    for day in (1, 2):
        start = datetime(2026, 11, day, tzinfo=UTC)
        batch = generate_batch(BatchSpec(rows=3000, seed=160 + day, start=start))
        land_and_curate(s3, settings, {f"rollout-{suffix}-{day}.parquet": batch})
        model = train_challenger(s3, settings, assemble_training_data(s3, settings), dag_run_id=f"rollout-{day}")
        found.append(register_challenger(client, settings, model["run_id"], model["model_id"], {}))
    promote_champion(client, settings, found[0])

    # Broken online, fine offline: its feature spec wants a feature the live traffic does not send yet
    # (training/serving skew). It loads, so the endpoint accepts it as a candidate; every score fails.
    def skewed(files):
        spec = json.loads(files["extra_files/feature_spec.json"])
        spec["numeric"].append("device_trust_score")
        return {**files, "extra_files/feature_spec.json": json.dumps(spec).encode()}

    found.append(register_copy_of_version(settings, s3, found[0], "skewed", skewed))
    return settings, found


@dataclasses.dataclass
class Replicas:
    endpoints: list[Endpoint]
    state_dirs: list
    env: dict[str, str]


@pytest.fixture(scope="module")
def replicas(versions, tmp_path_factory):
    """Two endpoint replicas of the same model, 2 workers each, each with its own state directory and port."""
    settings, _ = versions
    env = {
        "CT_MODEL_NAME": settings.model_name,
        "CT_SERVING_ADMIN_TOKEN": secrets.token_urlsafe(16),
        "CT_INFERENCE_FLUSH_SECONDS": "1",
    }
    group = Replicas([], [tmp_path_factory.mktemp(name) / "serving" for name in ("host-a", "host-b")], env)
    try:
        for state_dir in group.state_dirs:
            group.endpoints.append(Endpoint.start(state_dir, env))
        for endpoint in group.endpoints:
            _wait_ready(endpoint)
        yield group
    finally:
        for endpoint in group.endpoints:
            endpoint.stop()


def _wait_ready(endpoint: Endpoint, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while endpoint.served_version() is None:
        assert time.monotonic() < deadline, f"{endpoint.url} serves nothing after {timeout} s"
        time.sleep(0.2)


def _admin(endpoint: Endpoint) -> LocalEndpoint:
    return LocalEndpoint(endpoint.url, endpoint.token)


def _converge(endpoints, generation: int) -> tuple[list[dict], float]:
    """Every replica applied ``generation`` in all its workers; their /metadata deployments and the seconds it took."""
    started = time.monotonic()
    seen = [_admin(e).wait_converged(generation, timeout=STEP_SECONDS) for e in endpoints]
    return seen, time.monotonic() - started


def _records(n: int, seed: int, **changes) -> list[dict]:
    frame = generate_batch(BatchSpec(rows=n, seed=seed)).drop(columns=["event_time", "is_fraud"])
    records = json.loads(frame.to_json(orient="records", double_precision=15))
    return [{**r, **changes} for r in records]


class Load:
    """Single-row requests to both replicas in turn, all along (bounded: at most 120 s)."""

    def __init__(self, endpoints, records) -> None:
        self.endpoints, self.records = endpoints, records
        self.statuses: list[int] = []
        self.versions: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline, i = time.monotonic() + 120, 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            status, payload = self.endpoints[i % 2].post("/predict", self.records[i % len(self.records)])
            self.statuses.append(status)
            if status == 200:
                self.versions.add(payload["model_version"])
            i += 1
            time.sleep(0.005)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_two_replicas_follow_every_step_with_zero_failed_requests(versions, replicas):
    _, (v1, v2, _) = versions
    a, b = replicas.endpoints
    via_a, via_b = _admin(a), _admin(b)
    steps = [
        ("direct v1", lambda: via_a.deploy(v1), ("direct", 0, v1, None)),
        ("shadow v2", lambda: via_b.start_rollout(v2, "shadow", shadow_percent=50), ("shadow", 0, v1, v2)),
        ("canary 10", lambda: via_a.start_rollout(v2, "canary", 10, 0), ("canary", 10, v1, v2)),
        ("canary 50", lambda: via_b.start_rollout(v2, "canary", 50, 0), ("canary", 50, v1, v2)),
        ("promote", lambda: via_a.promote_candidate(updated_by="test"), ("direct", 0, v2, None)),
        ("canary v1", lambda: via_b.start_rollout(v1, "canary", 25, 0), ("canary", 25, v2, v1)),
        ("abort", lambda: via_a.abort_rollout(reason="bad numbers"), ("direct", 0, v2, None)),
    ]
    took = {}
    with Load([a, b], _records(50, seed=3)) as load:
        for name, write, (mode, percent, champion, candidate) in steps:
            generation = write()
            seen, took[name] = _converge([a, b], generation)
            for deployment in seen:
                assert (deployment["mode"], deployment["canary_percent"]) == (mode, percent), (name, deployment)
                assert (deployment["champion"], deployment["candidate"]) == (champion, candidate), (name, deployment)
                assert deployment["generation"] == generation, name
                assert len(deployment["workers"]) == 2, deployment["workers"]
                assert {w["generation"] for w in deployment["workers"]} == {generation}, deployment["workers"]
            time.sleep(0.3)  # some traffic on every step
    print(f"\nseconds until both replicas applied each step: {took}; {len(load.statuses)} requests")
    assert len(load.statuses) > 50
    assert set(load.statuses) == {200}, "every request during every step must succeed"
    assert load.versions == {v1, v2}  # the canary steps answered with the candidate too
    assert all(seconds < STEP_SECONDS for seconds in took.values()), took
    stored = via_b.rollout_state()
    assert stored is not None
    assert (stored["reason"], stored["updated_by"]) == ("bad numbers", "admin")
    text = a.metrics()
    assert re.search(rf'ct_deployment_generation\{{pid="\d+"\}} {stored["generation"]}\.0', text), text[-2000:]
    assert re.search(r'ct_variant_requests_total\{served="true",variant="candidate"\} [1-9]', text)


def test_admin_rollout_routes_need_the_token_and_refuse_a_stale_generation(versions, replicas):
    _, (v1, v2, _) = versions
    a = replicas.endpoints[0]
    body = {"mode": "shadow", "candidate": v2}
    assert a.post("/admin/rollout", body)[0] == 401
    assert a.post("/admin/rollout", body, token="wrong")[0] == 401
    assert a.get("/admin/rollout")[0] == 401
    generation = _admin(a).deploy(v1)
    status, payload = a.post("/admin/rollout", {**body, "expected_generation": generation - 1}, token=a.token)
    assert status == 409, payload
    status, payload = a.post("/admin/rollout", {"mode": "canary", "candidate": v2}, token=a.token)
    assert (status, payload["detail"]) == (422, "canary_percent: required for mode canary")
    status, payload = a.post("/admin/rollout", {"mode": "shadow", "candidate": v1}, token=a.token)
    assert status == 422, payload
    assert "already the champion" in payload["detail"], payload
    status, payload = a.post("/admin/rollout", {"mode": "shadow", "candidate": "999"}, token=a.token)
    assert status == 409, payload
    assert "cannot load '999'" in payload["detail"], payload
    assert (_admin(a).rollout_state() or {}).get("generation") == generation, "a refused write changed the state"


def _masked(body: bytes) -> bytes:
    """A response with its fresh prediction id blanked: the one part that differs per request."""
    return re.sub(rb'"prediction_id":"[0-9a-f]{32}"', b'"prediction_id":"-"', body)


def _log_rows(s3, settings, prediction_ids: set[str], count: int) -> pd.DataFrame:
    """Inference-log rows (every variant) of these predictions, once ``count`` of them reached S3."""
    from include.continuous_training.drift import read_inference_window

    deadline = time.monotonic() + 30
    while True:
        now = datetime.now(UTC)
        rows = read_inference_window(s3, settings, now - timedelta(hours=1), now + timedelta(minutes=1), False)
        mine = rows[rows["prediction_id"].isin(prediction_ids)] if len(rows) else rows
        if len(mine) >= count or time.monotonic() > deadline:
            return mine.reset_index(drop=True)
        time.sleep(0.5)


def test_shadow_answers_are_byte_identical_and_both_scores_are_logged_under_one_prediction_id(versions, replicas, s3):
    from include.continuous_training.drift import champion_served

    settings, (v1, v2, _) = versions
    a, b = replicas.endpoints
    records = _records(30, seed=11)
    _converge([a, b], _admin(a).deploy(v1))
    alone = [a.post_bytes("/predict", r) for r in records] + [a.post_bytes("/predict", {"records": records[:5]})]
    _converge([a, b], _admin(b).start_rollout(v2, "shadow", shadow_percent=100))
    shadowed = [a.post_bytes("/predict", r) for r in records] + [a.post_bytes("/predict", {"records": records[:5]})]

    assert all(status == 200 for status, _ in alone + shadowed)
    assert [_masked(body) for _, body in shadowed] == [_masked(body) for _, body in alone]
    ids = {json.loads(body)["prediction_id"] for _, body in shadowed[:-1]}
    rows = _log_rows(s3, settings, ids, 2 * len(ids))
    assert len(rows) == 2 * len(ids)
    champion, candidate = (
        rows[rows["variant"] == name].set_index("prediction_id") for name in ("champion", "candidate")
    )
    assert set(champion.index) == set(candidate.index) == ids
    assert champion["served"].all()
    assert not candidate["served"].any()
    assert set(champion["model_version"]) == {v1}
    assert set(candidate["model_version"]) == {v2}
    assert candidate["error"].isna().all()
    # Off-path rows scored together with others carry no latency of their own (null), the first of each call does.
    timed = candidate["latency_ms"].dropna()
    assert len(timed) >= 1
    assert (timed > 0).all()
    # The candidate's logged scores are v2's own offline scores of the same records (not v1's).
    model = load_model(f"models:/{settings.model_name}/{v2}")
    by_id = {json.loads(body)["prediction_id"]: r for (_, body), r in zip(shadowed, records, strict=False)}
    frame = pd.DataFrame([by_id[i] for i in candidate.index])
    offline = model.spec.predict(model.booster, model.spec.matrix(frame))
    assert candidate["score"].to_numpy() == pytest.approx(offline, abs=1e-6)
    assert (champion["score"] - candidate.loc[champion.index, "score"]).abs().max() > 1e-4  # two different models
    assert set(champion_served(rows)["prediction_id"]) == ids
    assert (champion_served(rows)["variant"] == "champion").all()


def test_canary_is_sticky_per_id_monotone_in_percent_and_the_right_share(versions, replicas):
    _, (v1, v2, _) = versions
    a, b = replicas.endpoints
    records = [{**r, ID: f"customer-{i:05d}"} for i, r in enumerate(_records(2000, seed=12))]

    def answered(endpoint: Endpoint, batch: list[dict]) -> dict[str, str]:
        answers = {}
        for start in range(0, len(batch), 1000):
            chunk = batch[start : start + 1000]
            status, payload = endpoint.post("/predict", {"records": chunk})
            assert status == 200, payload
            assert payload["model_version"] == v1  # the top-level version of a canary batch: the champion
            answers.update({r[ID]: p["model_version"] for r, p in zip(chunk, payload["predictions"], strict=True)})
        return answers

    _converge([a, b], _admin(a).deploy(v1))
    _converge([a, b], _admin(a).start_rollout(v2, "canary", 10, 0))
    at_10 = answered(a, records)
    on_candidate = {key for key, version in at_10.items() if version == v2}
    assert abs(len(on_candidate) / len(records) - 0.10) <= 0.03, len(on_candidate)
    # Exactly the documented assignment: anyone can tell who is on the candidate.
    assert on_candidate == {r[ID] for r in records if canary_bucket(entity_key(r, ID), v2) < 10}
    # Sticky: the other replica, other feature values, one row at a time: the same answerer per customer.
    again = [{**r, "amount": r["amount"] + 1} for r in records[:200]]
    assert answered(b, again) == {r[ID]: at_10[r[ID]] for r in again}
    for record in records[:40]:
        status, payload = b.post("/predict", record)
        assert (status, payload["model_version"]) == (200, at_10[record[ID]])

    # At 50 %, with shadow_percent 100: the variant that did not answer a record also scores it, off the path.
    before = {v: _counter(b.metrics(), "ct_variant_requests_total", served="false", variant=v) for v in VARIANTS}
    _converge([a, b], _admin(b).start_rollout(v2, "canary", 50, 100))
    at_50 = answered(b, records)
    moved = {key for key, version in at_50.items() if version == v2}
    assert on_candidate <= moved, "raising the share moved customers back to the champion"
    assert abs(len(moved) / len(records) - 0.50) <= 0.03, len(moved)
    deadline = time.monotonic() + 10
    while True:  # two batch requests, each with records of both variants: two off-path jobs per variant
        after = {v: _counter(b.metrics(), "ct_variant_requests_total", served="false", variant=v) for v in VARIANTS}
        if all(after[v] - before[v] >= 2 for v in VARIANTS) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(after[v] - before[v] >= 2 for v in VARIANTS), (before, after)


def _counter(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_a_candidate_that_fails_online_costs_the_caller_nothing_in_shadow_and_canary(versions, replicas, s3):
    settings, (v1, _, broken) = versions
    a, b = replicas.endpoints
    records = [{**r, ID: f"skew-{i}"} for i, r in enumerate(_records(60, seed=13))]
    _converge([a, b], _admin(a).deploy(v1))
    alone = [_masked(a.post_bytes("/predict", r)[1]) for r in records[:20]]
    errors_before = _counter(a.metrics(), "ct_variant_errors_total", variant="candidate")

    _converge([a, b], _admin(a).start_rollout(broken, "shadow", shadow_percent=100))
    shadowed = [a.post_bytes("/predict", r) for r in records[:20]]
    assert [status for status, _ in shadowed] == [200] * 20
    assert [_masked(body) for _, body in shadowed] == alone

    _converge([a, b], _admin(a).start_rollout(broken, "canary", 100, 0))  # every record routed to it
    canaried = [a.post("/predict", r) for r in records[20:]]
    status, batch = a.post("/predict", {"records": records[:10]})
    assert [s for s, _ in canaried] == [200] * 40
    assert status == 200
    assert {p["model_version"] for _, p in canaried} == {v1}, "the champion answers what the candidate cannot"
    assert {p["model_version"] for p in batch["predictions"]} == {v1}

    deadline = time.monotonic() + 10
    while _counter(a.metrics(), "ct_variant_errors_total", variant="candidate") - errors_before < 20 + 40 + 1:
        assert time.monotonic() < deadline, a.metrics()[-3000:]  # shadow errors are counted off the path
        time.sleep(0.2)
    ids = {p["prediction_id"] for _, p in canaried}
    rows = _log_rows(s3, settings, ids, 2 * len(ids))
    failed = rows[rows["variant"] == "candidate"]
    assert len(failed) == len(ids)
    assert not failed["served"].any()
    assert failed["score"].isna().all()
    assert failed["error"].str.contains("device_trust_score").all(), failed["error"].iloc[0]
    assert rows[rows["variant"] == "champion"]["served"].all()


def test_a_replica_killed_mid_canary_comes_back_on_the_current_step(versions, replicas):
    _, (v1, v2, _) = versions
    a, b = replicas.endpoints
    _converge([a, b], _admin(a).deploy(v1))
    _converge([a, b], _admin(a).start_rollout(v2, "canary", 10, 0))
    b.kill()
    # The rollout moves on while host b is down: it must come back on this step, not the one it died on.
    generation = _admin(a).start_rollout(v2, "canary", 25, 0, reason="next step while host b is down")
    restarted = Endpoint.start(replicas.state_dirs[1], replicas.env, port=b.port)
    replicas.endpoints[1] = restarted  # stopped by the fixture
    started = time.monotonic()
    deployment = _admin(restarted).wait_converged(generation, timeout=60)
    print(f"\nrestarted replica applied generation {generation} {time.monotonic() - started:.1f} s after /health")
    assert (deployment["mode"], deployment["canary_percent"], deployment["candidate"]) == ("canary", 25.0, v2)
    assert {w["generation"] for w in deployment["workers"]} == {generation}
    assert restarted.pid != b.pid


def _stored(store: DeploymentStore) -> StoredDeployment:
    found = store.read()
    assert found is not None, f"nothing at {store.uri}"
    return found


def test_concurrent_writers_one_wins_the_other_gets_a_conflict_and_update_retries(settings):
    store = DeploymentStore(dataclasses.replace(settings, model_name=f"cas-{uuid.uuid4().hex[:8]}"))
    first = DesiredDeployment(champion="1", generation=1, updated_at=utc_now(), reason="first")
    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def write(name: str, expected) -> None:
        barrier.wait()
        try:
            results[name] = store.write(dataclasses.replace(first, reason=name), expected)
        except DeploymentConflict as error:
            results[name] = error

    for expected in (None, "read"):  # the first write (If-None-Match: *), then a replacement (If-Match)
        current = store.read() if expected else None
        if current is not None:
            first = dataclasses.replace(current.state, generation=current.state.generation + 1)
        threads = [threading.Thread(target=write, args=(n, current)) for n in ("left", "right")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [n for n, r in results.items() if not isinstance(r, Exception)]
        lost = [n for n, r in results.items() if isinstance(r, DeploymentConflict)]
        assert len(won) == 1, results
        assert len(lost) == 1, results
        assert _stored(store).state.reason == won[0]
        results.clear()

    generation = _stored(store).state.generation
    reasons: list[str] = []

    def bump(name: str) -> None:
        for i in range(5):
            reason = f"{name}-{i}"

            def change(current: DesiredDeployment | None, reason: str = reason) -> DesiredDeployment:
                assert current is not None
                return dataclasses.replace(current, reason=reason, updated_by=name)

            store.update(change)
            reasons.append(reason)

    threads = [threading.Thread(target=bump, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reasons) == 10
    assert _stored(store).state.generation == generation + 10, "an update was lost"
