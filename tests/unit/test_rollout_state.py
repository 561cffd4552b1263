"""The desired deployment's record and the sticky canary assignment (no services needed)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading

import pytest

from include.continuous_training.rollout_state import (
    DeploymentStateError,
    DesiredDeployment,
    canary_bucket,
    entity_key,
    state_key,
)
from tests.conftest import ROOT

STORED = DesiredDeployment(
    champion="3",
    candidate="4",
    mode="canary",
    canary_percent=10,
    shadow_percent=100.0,
    generation=7,
    updated_at="2026-11-23T10:00:00.000+00:00",
    updated_by="manual__2026-11-23",
    reason="canary step 1",
)


def test_a_state_round_trips_through_json():
    text = STORED.to_json()
    assert DesiredDeployment.from_json(text) == STORED
    assert DesiredDeployment.from_json(text.encode()) == STORED
    assert json.loads(text)["canary_percent"] == 10.0  # numbers are floats once checked
    # A newer writer's extra field does not stop an older replica from following the state.
    assert DesiredDeployment.from_json(json.dumps({**json.loads(text), "added_later": 1})) == STORED


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"mode": "blue-green"}, "mode"),
        ({"mode": "direct"}, "candidate"),  # direct with a candidate: ambiguous, refused
        ({"candidate": None}, "candidate"),  # canary without a candidate
        ({"candidate": "3"}, "candidate"),  # the champion as its own candidate
        ({"champion": None}, "champion"),  # a candidate compared with nothing
        ({"champion": "v3"}, "champion"),
        ({"candidate": 4}, "candidate"),
        ({"canary_percent": 101}, "canary_percent"),
        ({"canary_percent": -1}, "canary_percent"),
        ({"canary_percent": float("nan")}, "canary_percent"),
        ({"canary_percent": "10"}, "canary_percent"),
        ({"shadow_percent": True}, "shadow_percent"),
        ({"generation": -1}, "generation"),
        ({"generation": 1.5}, "generation"),
        ({"updated_at": "yesterday"}, "updated_at"),
        ({"updated_at": "2026-11-23T10:00:00"}, "updated_at"),  # no UTC offset
        ({"reason": None}, "reason"),
    ],
)
def test_invalid_states_are_refused_naming_the_field(changes, field):
    with pytest.raises(DeploymentStateError, match=rf"^{field}: "):
        dataclasses.replace(STORED, **changes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"champion": "3"}), "missing field"),
        (json.dumps({**STORED.as_dict(), "generation": 0}), "generation: a stored state has generation >= 1"),
        (json.dumps({**STORED.as_dict(), "mode": "direct"}), "candidate: mode direct"),
    ],
)
def test_a_malformed_stored_state_names_the_object(text, message):
    with pytest.raises(DeploymentStateError, match=message) as refused:
        DesiredDeployment.from_json(text, where="s3://b/serving/m/deployment.json")
    assert str(refused.value).startswith("s3://b/serving/m/deployment.json: ")


def test_direct_and_unload_states_are_valid():
    assert DesiredDeployment(champion="3").versions == ("3",)
    assert DesiredDeployment(champion=None).versions == ()  # serve nothing
    assert DesiredDeployment(champion="3", candidate="4", mode="shadow").versions == ("3", "4")


def test_the_state_key_is_per_registered_model_under_the_prefix(settings_for):
    assert state_key(settings_for(model_name="ct-classifier")) == "serving/ct-classifier/deployment.json"
    assert state_key(settings_for(model_name="pen guins", serving_state_prefix="penguins/serving/")) == (
        "penguins/serving/pen_guins/deployment.json"
    )


@pytest.fixture
def settings_for():
    from include.continuous_training.config import load_settings

    return lambda **changes: dataclasses.replace(load_settings({}), **changes)


# -- sticky canary assignment -------------------------------------------------------------------------
IDS = [f"tx-{i:05d}" for i in range(2000)]


def test_the_bucket_is_stable_across_processes_not_pythons_salted_hash():
    probe = (
        "from include.continuous_training.rollout_state import canary_bucket; "
        "print(repr([canary_bucket(f'tx-{i:05d}', '4') for i in range(50)]))"
    )
    seen = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        seen.add(done.stdout.strip())
    assert seen == {repr([canary_bucket(f"tx-{i:05d}", "4") for i in range(50)])}


def test_the_candidate_share_is_right_and_monotone_in_the_percentage():
    buckets = [canary_bucket(key, "4") for key in IDS]
    assert all(0.0 <= b < 100.0 for b in buckets)
    previous: set[str] = set()
    for percent in (5, 10, 25, 50, 100):
        chosen = {key for key, b in zip(IDS, buckets, strict=True) if b < percent}
        assert abs(len(chosen) / len(IDS) - percent / 100) <= 0.03, percent
        assert previous <= chosen, f"raising to {percent} % moved someone off the candidate"
        previous = chosen
    assert len(previous) == len(IDS)


def test_each_candidate_draws_its_own_customers():
    first = {key for key in IDS if canary_bucket(key, "4") < 10}
    second = {key for key in IDS if canary_bucket(key, "5") < 10}
    assert len(first & second) < len(first) / 2  # independent draws overlap by about 10 %


def test_the_entity_is_the_id_or_else_the_record_itself():
    record = {"transaction_id": 42, "amount": 1.5, "channel": "pos"}
    assert entity_key(record, "transaction_id") == entity_key({**record, "amount": 9.0}, "transaction_id") == "42"
    assert entity_key({"transaction_id": "42"}, "transaction_id") == "42"
    # No id column (or the record carries none): the canonical record, whatever the key order.
    reordered = {"channel": "pos", "amount": 1.5, "transaction_id": 42}
    assert entity_key(record, "") == entity_key(reordered, "") == '{"amount":1.5,"channel":"pos","transaction_id":42}'
    assert entity_key({"amount": 1.5}, "transaction_id") == '{"amount":1.5}'
    assert entity_key({"amount": 1.5}, "") != entity_key({"amount": 1.6}, "")


# -- the off-path queue ---------------------------------------------------------------------------------
def test_a_full_shadow_queue_drops_and_counts_and_never_waits():
    from include.continuous_training.serving.variants import ShadowJob, ShadowScorer

    release = threading.Event()
    scored: list[str] = []
    dropped: list[int] = []

    def slow(jobs: list[ShadowJob]) -> None:  # a candidate that takes as long as it likes
        release.wait(10)
        scored.extend(job.prediction_ids[0] for job in jobs)

    scorer = ShadowScorer(2, slow, lambda: dropped.append(1))
    jobs = [ShadowJob(None, "candidate", [{}], [f"p{i}"], 0.0) for i in range(5)]  # type: ignore[arg-type]
    assert [scorer.submit(job) for job in jobs] == [True, True, False, False, False]  # not started: 2 fit
    assert (scorer.dropped, len(dropped), scorer.waiting) == (3, 3, 2)
    scorer.start()
    release.set()
    scorer.close()
    assert scored == ["p0", "p1"]


def test_jobs_are_batched_per_model_and_one_that_raises_does_not_stop_the_shadow_thread():
    from include.continuous_training.serving.variants import ShadowJob, ShadowScorer

    scored: list[str] = []

    calls: list[list[str]] = []

    def flaky(jobs: list[ShadowJob]) -> None:
        calls.append([job.prediction_ids[0] for job in jobs])
        if jobs[0].prediction_ids[0] == "bad":
            raise RuntimeError("boom")
        scored.extend(job.prediction_ids[0] for job in jobs)

    class Model:
        version = "9"

    one, other = Model(), Model()
    scorer = ShadowScorer(10, flaky, lambda: None)
    for model, pid in ((one, "a"), (one, "b"), (other, "bad"), (one, "c")):
        scorer.submit(ShadowJob(model, "candidate", [{}], [pid], 0.0))  # type: ignore[arg-type]
    scorer.start()  # queued before the thread runs: a and b together, then bad alone (another model), then c
    scorer.close()
    assert calls == [["a", "b"], ["bad"], ["c"]]
    assert scored == ["a", "b", "c"]
