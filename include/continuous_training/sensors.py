"""A deferrable sensor that waits for landing objects that have not been ingested yet.

Why not the amazon provider's ``S3KeySensor``: with a wildcard it fires as soon as *any* object
exists under ``landing/``, and since raw files are never deleted it would fire on every run. Its
``check_fn`` variant HEADs every landing object on every poke and wakes a worker each time. This
trigger compares one listing of ``landing/`` with the manifest's listings in the triggerer (no object
reads, no worker slot) and fires only when an un-ingested object version exists.

The triggerer needs ``include/`` importable (the project root on ``PYTHONPATH``), as every worker does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseSensorOperator, Param, PokeReturnValue
from airflow.sdk.exceptions import AirflowSkipException
from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow.sdk import Context

MAX_OBJECTS_PER_RUN = 100


def replay_params() -> dict[str, Param]:
    """The ingest DAG's Params (fresh per DAG): a run given ``replay_keys`` replays those quarantined objects."""
    return {
        "replay_keys": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Landing keys of quarantined objects to validate again against the current suite, "
            "e.g. after a suite fix (each is curated at most once per suite version). Empty: wait for new data.",
        )
    }


def _find_new(aws_conn_id: str, limit: int, model: str = "") -> list[dict[str, Any]]:
    from include.continuous_training.config import load_settings
    from include.continuous_training.ingestion import find_new_objects
    from include.continuous_training.storage import s3_client_from_connection

    settings = load_settings(model=model or None)  # "": CT_MODEL, else the environment alone
    client = s3_client_from_connection(aws_conn_id)
    return [ref.as_dict() for ref in find_new_objects(client, settings, limit=limit)]


def _find_quarantined(aws_conn_id: str, keys: list[str], model: str = "") -> list[dict[str, Any]]:
    """The quarantined versions of ``keys``, marked ``replay`` for ``ingest_batch`` (the ``replay_keys`` Param)."""
    from include.continuous_training.config import task_settings
    from include.continuous_training.ingestion import quarantined_objects
    from include.continuous_training.storage import s3_client_from_connection

    settings = task_settings(model or None)
    client = s3_client_from_connection(aws_conn_id)
    return [{**ref.as_dict(), "replay": True} for ref in quarantined_objects(client, settings, keys)]


class NewLandingObjectsTrigger(BaseTrigger):
    """Lists landing and the manifest every ``poke_interval`` seconds until something is new."""

    def __init__(
        self, aws_conn_id: str, poke_interval: float, deadline: float, limit: int = MAX_OBJECTS_PER_RUN, model: str = ""
    ):
        super().__init__()
        self.model = model
        self.aws_conn_id = aws_conn_id
        self.poke_interval = poke_interval
        self.deadline = deadline
        self.limit = limit

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "aws_conn_id": self.aws_conn_id,
                "poke_interval": self.poke_interval,
                "deadline": self.deadline,
                "limit": self.limit,
                "model": self.model,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        find = sync_to_async(_find_new)  # like the amazon hooks: connection lookups stay sync
        while True:
            try:
                objects = await find(self.aws_conn_id, self.limit, self.model)
            except Exception as error:  # surface S3 errors to the task instead of looping silently
                yield TriggerEvent({"status": "error", "message": f"{type(error).__name__}: {error}"})
                return
            if objects:
                yield TriggerEvent({"status": "found", "objects": objects})
                return
            if time.time() >= self.deadline:
                yield TriggerEvent({"status": "timeout"})
                return
            self.log.info("No new landing objects; next look in %.0fs", self.poke_interval)
            await asyncio.sleep(min(self.poke_interval, max(self.deadline - time.time(), 0.0)))


class NewLandingObjectsSensor(BaseSensorOperator):
    """Wait for landing objects with no manifest entry; return them (``ObjectRef`` dicts) via XCom.

    ``model`` names the model file whose landing prefix and manifest are watched (empty: ``CT_MODEL``,
    else the environment's settings alone).

    A run whose ``replay_keys`` Param names landing keys returns their quarantined versions instead,
    at once and marked ``"replay": True`` (``ingestion.replay_object`` takes them).

    No new data before ``timeout`` → the task is *skipped* (not failed): an hour without new files
    is normal. Deferrable by default; ``deferrable=False`` pokes in the worker instead.
    """

    template_fields: Sequence[str] = ("aws_conn_id",)
    ui_color = "#e3f2fd"

    def __init__(
        self,
        *,
        aws_conn_id: str,
        model: str = "",
        limit: int = MAX_OBJECTS_PER_RUN,
        deferrable: bool = True,
        **kwargs: Any,
    ):
        kwargs.setdefault("soft_fail", True)
        super().__init__(**kwargs)
        self.model = model
        self.aws_conn_id = aws_conn_id
        self.limit = limit
        self.deferrable = deferrable

    def poke(self, context: Context) -> PokeReturnValue:
        objects = _find_new(self.aws_conn_id, self.limit, self.model)
        if objects:
            self.log.info("%d new landing object(s): %s", len(objects), ", ".join(o["key"] for o in objects))
        return PokeReturnValue(is_done=bool(objects), xcom_value=objects)

    def execute(self, context: Context) -> Any:
        replay_keys = list((context.get("params") or {}).get("replay_keys") or [])
        if replay_keys:  # a run asked to replay quarantined objects: those, at once, and nothing new
            from include.continuous_training.errors import task_outcome

            with task_outcome():  # an unknown key fails the run without retries
                objects = _find_quarantined(self.aws_conn_id, replay_keys, self.model)
            self.log.info("replaying %d quarantined object(s): %s", len(objects), ", ".join(o["key"] for o in objects))
            return objects
        if not self.deferrable:
            return super().execute(context)
        found = self.poke(context)
        if found.is_done:
            return found.xcom_value
        self.defer(
            trigger=NewLandingObjectsTrigger(
                aws_conn_id=self.aws_conn_id,
                poke_interval=float(self.poke_interval),
                deadline=time.time() + float(self.timeout),
                limit=self.limit,
                model=self.model,
            ),
            method_name="execute_complete",
            # Safety net only: the trigger ends itself at the deadline with a "timeout" event.
            timeout=timedelta(seconds=float(self.timeout) + 300),
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
        status = event.get("status")
        if status == "found":
            objects: list[dict[str, Any]] = event["objects"]
            self.log.info("%d new landing object(s): %s", len(objects), ", ".join(o["key"] for o in objects))
            return objects
        if status == "timeout":
            message = f"no new landing objects within {float(self.timeout):.0f}s; skipping this run"
            self.log.info(message)
            raise AirflowSkipException(message)
        raise RuntimeError(f"new-data trigger failed: {event.get('message')}")


def _count_rollout_requests(aws_conn_id: str, model: str, since: float) -> dict[str, int]:
    from include.continuous_training.config import load_settings
    from include.continuous_training.rollout import count_variant_requests
    from include.continuous_training.storage import s3_client_from_connection

    settings = load_settings(model=model or None)
    return count_variant_requests(s3_client_from_connection(aws_conn_id), settings, since)


class RolloutTrafficTrigger(BaseTrigger):
    """Counts the inference log's rows per variant since a stage began, until there are enough or time is up."""

    def __init__(
        self, aws_conn_id: str, model: str, since: float, deadline: float, min_requests: int, poke_interval: float
    ):
        super().__init__()
        self.aws_conn_id = aws_conn_id
        self.model = model
        self.since = since
        self.deadline = deadline
        self.min_requests = min_requests
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "aws_conn_id": self.aws_conn_id,
                "model": self.model,
                "since": self.since,
                "deadline": self.deadline,
                "min_requests": self.min_requests,
                "poke_interval": self.poke_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        count = sync_to_async(_count_rollout_requests)
        while True:
            try:
                counts = await count(self.aws_conn_id, self.model, self.since)
            except Exception as error:  # surface S3 errors to the task instead of looping silently
                yield TriggerEvent({"status": "error", "message": f"{type(error).__name__}: {error}"})
                return
            scored = counts.get("candidate", 0)
            if scored >= self.min_requests:
                yield TriggerEvent({"status": "enough", "counts": counts, "deadline_passed": False})
                return
            if time.time() >= self.deadline:
                yield TriggerEvent({"status": "deadline", "counts": counts, "deadline_passed": True})
                return
            self.log.info(
                "%d of %d candidate-scored requests; next look in %.0fs", scored, self.min_requests, self.poke_interval
            )
            await asyncio.sleep(min(self.poke_interval, max(self.deadline - time.time(), 0.0)))


class WaitForRolloutTraffic(BaseOperator):
    """Wait, deferred (no worker slot), until a rollout stage has seen enough candidate-scored requests.

    ``stage_task_id`` names the task that started the stage; its XCom holds ``started_at`` (a Unix
    time). The wait ends after ``min_requests`` candidate-scored requests or ``max_minutes``, whichever
    comes first; either way it returns ``{"counts": {...}, "deadline_passed": bool}`` and the analysis
    task judges (too little traffic is the analysis's verdict, not a timeout here).
    """

    ui_color = "#fff3e0"

    def __init__(
        self,
        *,
        stage_task_id: str,
        aws_conn_id: str,
        model: str,
        min_requests: int,
        max_minutes: float,
        poke_interval: float,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.stage_task_id = stage_task_id
        self.aws_conn_id = aws_conn_id
        self.model = model
        self.min_requests = min_requests
        self.max_minutes = max_minutes
        self.poke_interval = poke_interval

    def execute(self, context: Context) -> Any:
        started = float(context["ti"].xcom_pull(task_ids=self.stage_task_id)["started_at"])
        deadline = started + self.max_minutes * 60
        self.defer(
            trigger=RolloutTrafficTrigger(
                aws_conn_id=self.aws_conn_id,
                model=self.model,
                since=started,
                deadline=deadline,
                min_requests=self.min_requests,
                poke_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(deadline - time.time(), 0.0) + 300),  # safety net: the trigger ends itself
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") == "error":
            raise RuntimeError(f"rollout traffic trigger failed: {event.get('message')}")
        self.log.info("rollout stage traffic: %s (deadline passed: %s)", event["counts"], event["deadline_passed"])
        return {"counts": event["counts"], "deadline_passed": bool(event["deadline_passed"])}
