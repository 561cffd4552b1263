"""How long "batch lands → champion serving" took, and what a rollout added to it, from Airflow's records.

:func:`loop_timing` reads the task instances of one loop (the ingest run that took the batch, the
``train_and_deploy`` run it started; as Airflow's REST API returns them, ``start_date`` / ``end_date``
in ISO 8601) and the time the batch was put in ``landing/``:

- ``total_s``: the upload → the end of ``promote_champion`` (after a rollout, the moment every
  replica serves the new champion);
- ``rollout_s``: what the rollout stages added: from the end of ``smoke_test`` to the start of
  ``promote_champion``, less the one hand-off a direct promotion has there too (the median of the
  other gaps between consecutive tasks on the path);
- ``without_rollout_s``: ``total_s - rollout_s``, the same loop promoted directly;
- per stage (``shadow``, ``canary_10``…): ``start_<stage>`` starts → ``analyze_<stage>`` ends, and
  the part of it spent waiting for traffic (``start_<stage>`` ends → ``wait_for_<stage>_traffic`` ends).

The demo's summary shows it; ``benchmarks/bench_loop.py`` measures the same path without a rollout.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StageTiming:
    """One rollout stage on the clock."""

    stage: str  # the slug in the task ids: shadow, canary_10
    seconds: float  # start_<stage> starts -> analyze_<stage> ends
    waiting_s: float  # start_<stage> ends -> wait_for_<stage>_traffic ends (traffic + inference-log flush)


@dataclass(frozen=True)
class LoopTiming:
    """One loop, batch landed → champion serving, with and without its rollout stages (seconds)."""

    total_s: float
    rollout_s: float
    without_rollout_s: float
    handoff_s: float  # the median gap between consecutive tasks, kept in without_rollout_s
    stages: list[StageTiming] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if not self.stages:
            return f"batch lands -> champion serving {self.total_s:.0f} s (no rollout stages)"
        parts = ", ".join(f"{s.stage} {s.seconds:.0f} s (waiting for traffic {s.waiting_s:.0f} s)" for s in self.stages)
        return (
            f"batch lands -> champion serving {self.total_s:.0f} s with the rollout, about "
            f"{self.without_rollout_s:.0f} s without: the stages added {self.rollout_s:.0f} s ({parts})"
        )


def when(value: str | None) -> datetime:
    """A task instance's ``start_date`` / ``end_date`` as an aware datetime."""
    if value is None:
        raise ValueError("task instance without a start or end date: did it run?")
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def ran(instances: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The task instances that ran to success, by task id (a mapped task: its last instance)."""
    return {ti["task_id"]: ti for ti in instances if ti["state"] == "success"}


def loop_timing(
    landed: datetime, ingest: Iterable[Mapping[str, Any]], training: Iterable[Mapping[str, Any]]
) -> LoopTiming:
    """:class:`LoopTiming` of the loop whose batch landed at ``landed`` (aware), from the task instances of
    the ingest run that took it (``ingest``) and of the ``train_and_deploy`` run it started (``training``).

    Raises:
        ValueError: ``ingest_batch``, ``smoke_test`` or ``promote_champion`` did not succeed: the loop
            did not close, there is nothing to time.
    """
    ingested, trained = ran(ingest), ran(training)
    for task_id, instances in (("ingest_batch", ingested), ("smoke_test", trained), ("promote_champion", trained)):
        if task_id not in instances:
            raise ValueError(f"{task_id} did not succeed in this loop: nothing to time")
    promote, smoke = trained["promote_champion"], trained["smoke_test"]
    total = (when(promote["end_date"]) - landed).total_seconds()
    stage_slugs = [task_id.removeprefix("start_") for task_id in trained if task_id.startswith("start_")]
    stages = [
        StageTiming(
            slug,
            (
                when(trained[f"analyze_{slug}"]["end_date"]) - when(trained[f"start_{slug}"]["start_date"])
            ).total_seconds(),
            (
                when(trained[f"wait_for_{slug}_traffic"]["end_date"]) - when(trained[f"start_{slug}"]["end_date"])
            ).total_seconds(),
        )
        for slug in stage_slugs
        if f"analyze_{slug}" in trained and f"wait_for_{slug}_traffic" in trained
    ]
    stages.sort(key=lambda s: when(trained[f"start_{s.stage}"]["start_date"]))
    rollout_tasks = {f"{step}_{s.stage}" for s in stages for step in ("start", "analyze")}
    rollout_tasks |= {f"wait_for_{s.stage}_traffic" for s in stages}
    path = [ingested["ingest_batch"], *(ti for task_id, ti in trained.items() if task_id not in rollout_tasks)]
    path.sort(key=lambda ti: when(ti["start_date"]))
    gaps = [(when(b["start_date"]) - when(a["end_date"])).total_seconds() for a, b in itertools.pairwise(path)]
    # The smoke test -> promotion gap is the one a direct promotion would have: it is what is left out.
    gaps = [gap for a, b, gap in zip(path, path[1:], gaps, strict=False) if (a, b) != (smoke, promote)]
    handoff = statistics.median(gaps) if gaps else 0.0
    span = (when(promote["start_date"]) - when(smoke["end_date"])).total_seconds()
    rollout = max(0.0, span - handoff) if stages else 0.0
    return LoopTiming(round(total, 1), round(rollout, 1), round(total - rollout, 1), round(handoff, 1), stages)
