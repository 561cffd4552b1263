"""The loop's clock from Airflow's task-instance records: what a rollout added to "batch lands → champion serving"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devtools.loop_timing import loop_timing

LANDED = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def _ti(task_id: str, start: float, end: float, state: str = "success") -> dict:
    """A task instance as Airflow's REST API returns it: ISO dates with a Z, seconds after LANDED."""

    def iso(seconds: float) -> str:
        return (LANDED + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    return {"task_id": task_id, "state": state, "start_date": iso(start), "end_date": iso(end), "map_index": -1}


INGEST = [_ti("wait_for_new_data", -30, 3), _ti("ingest_batch", 4, 10)]
BEFORE = [  # each task starts 1 s after the previous one ends
    _ti("assemble_training_data", 12, 14),
    _ti("train_challenger", 15, 25),
    _ti("evaluate_challenger", 26, 28),
    _ti("decide_promotion", 29, 30),
    _ti("register_challenger", 31, 32),
    _ti("deploy_challenger", 33, 36),
    _ti("smoke_test", 37, 40),
]
SKIPPED = [_ti("reject_challenger", 31, 31, "skipped"), _ti("rollback_deployment", 60, 60, "skipped")]


def test_a_rollout_adds_its_stages_less_the_hand_off_a_direct_promotion_has_too():
    stages = [
        _ti("start_shadow", 41, 43),
        _ti("wait_for_shadow_traffic", 44, 50),
        _ti("analyze_shadow", 51, 53),
        _ti("start_canary_10", 54, 55),
        _ti("wait_for_canary_10_traffic", 56, 70),
        _ti("analyze_canary_10", 71, 72),
    ]
    training = [*BEFORE, *stages, _ti("promote_champion", 74, 76), *SKIPPED]
    timing = loop_timing(LANDED, INGEST, list(reversed(training)))  # the order of the records does not matter

    assert timing.total_s == 76  # landed -> promote_champion ends
    assert timing.handoff_s == 1  # ingest_batch -> assemble is 2 s, every other gap 1 s: the median
    # smoke_test ends at 40, promote starts at 74: 34 s, of which 1 s a direct promotion waits as well
    assert timing.rollout_s == 33
    assert timing.without_rollout_s == 43
    assert [(s.stage, s.seconds, s.waiting_s) for s in timing.stages] == [("shadow", 12, 7), ("canary_10", 18, 15)]
    assert timing.summary() == (
        "batch lands -> champion serving 76 s with the rollout, about 43 s without: the stages added 33 s "
        "(shadow 12 s (waiting for traffic 7 s), canary_10 18 s (waiting for traffic 15 s))"
    )


def test_a_direct_promotion_adds_nothing():
    training = [*BEFORE, _ti("promote_champion", 41, 42), *SKIPPED]
    timing = loop_timing(LANDED, INGEST, training)
    assert (timing.total_s, timing.rollout_s, timing.without_rollout_s, timing.stages) == (42, 0, 42, [])


def test_skipped_stages_of_a_first_model_are_not_a_rollout():
    skipped_stages = [_ti(f"{step}_shadow", 41, 41, "skipped") for step in ("start", "analyze")]
    training = [*BEFORE, *skipped_stages, _ti("promote_champion", 41, 42), *SKIPPED]
    assert loop_timing(LANDED, INGEST, training).rollout_s == 0


def test_a_loop_that_did_not_promote_cannot_be_timed():
    training = [*BEFORE, _ti("start_shadow", 41, 43), _ti("analyze_shadow", 51, 53, "failed")]
    with pytest.raises(ValueError, match="promote_champion did not succeed in this loop"):
        loop_timing(LANDED, INGEST, training)
