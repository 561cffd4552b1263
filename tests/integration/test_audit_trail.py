"""The audit trail: every alias move appended to S3 (one object per event, never rewritten), and the
history command answering "which version was the champion then, and why" — real MLflow, real S3."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest

from devtools.datasets import BatchSpec, generate_batch
from devtools.services import PROJECT_ROOT, subprocess_env
from include.continuous_training.audit import audit_prefix, read_history, serving_at
from include.continuous_training.registry import (
    CHAMPION,
    promote_champion,
    register_challenger,
    retire_challenger,
    tracking_client,
)
from include.continuous_training.storage import PreconditionFailed, put_json
from include.continuous_training.training import assemble_training_data, train_challenger
from tests.integration.conftest import land_and_curate, register_copy_of_version


@pytest.fixture
def versions(services, empty_bucket, s3):
    """Three versions of a fresh model (one trained, two copies of it), no alias set."""
    from include.continuous_training.config import load_settings

    name = f"audit-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(load_settings(), model_name=name, mlflow_experiment=name)
    land_and_curate(s3, settings, {f"{name}.parquet": generate_batch(BatchSpec(rows=1500, seed=3))})
    model = train_challenger(s3, settings, assemble_training_data(s3, settings), dag_run_id="audit")
    return settings, model


def _moves(events):
    return [(e.alias, e.action, e.from_version, e.to_version, e.who) for e in events]


def test_every_alias_move_is_appended_once_and_the_champion_at_any_time_is_answered(versions, s3):
    settings, model = versions
    client = tracking_client(settings)
    uri = f"runs:/{model['run_id']}/evaluation/decision.json"
    before_anything = datetime.now(UTC)

    v1 = register_challenger(client, settings, model["run_id"], model["model_id"], {}, who="run-1", record_uri=uri)
    promote_champion(client, settings, v1, who="run-1", why="the first model: floor passed", record_uri=uri)
    time.sleep(0.01)
    while_v1 = datetime.now(UTC)
    v2 = register_copy_of_version(settings, s3, v1, "second", lambda files: files)
    promote_champion(client, settings, v2, who="alice (approval in run-2)", why="beat v1 by +0.02 AUC")
    promote_champion(client, settings, v2, who="run-2-retry")  # a retry: already the champion, no new event
    v3 = register_copy_of_version(settings, s3, v1, "third", lambda files: files)
    client.set_registered_model_alias(settings.model_name, "challenger", v3)
    retire_challenger(client, settings, v3, who="run-3", why="rollout failed at canary 5%: error rate")

    events = read_history(s3, settings)
    assert _moves(events) == [
        ("challenger", "set", None, v1, "run-1"),
        ("champion", "set", None, v1, "run-1"),
        ("previous_champion", "set", None, v1, "alice (approval in run-2)"),
        ("champion", "set", v1, v2, "alice (approval in run-2)"),
        ("challenger", "cleared", v3, None, "run-3"),
    ]
    assert events[1].record_uri == uri
    assert events[-1].why == "rollout failed at canary 5%: error rate"

    # "Which version was serving then, and why?"
    assert serving_at(events, before_anything) is None
    then = serving_at(events, while_v1)
    assert then is not None
    assert (then.to_version, then.who, then.why) == (v1, "run-1", "the first model: floor passed")
    now = serving_at(events, datetime.now(UTC))
    assert now is not None
    assert (now.to_version, now.who) == (v2, "alice (approval in run-2)")

    # Append-only: one object per event, and no event object can be written over.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=audit_prefix(settings))["Contents"]]
    assert len(keys) == len(events)
    with pytest.raises(PreconditionFailed):
        put_json(s3, settings.s3_bucket, keys[0], {"alias": "champion", "to_version": "99"}, only_if_absent=True)
    assert read_history(s3, settings) == events

    # A crash between an alias move and its event: the retry writes the missing event.
    client.set_registered_model_alias(settings.model_name, CHAMPION, v3)  # moved, then the task died
    promote_champion(client, settings, v3, who="run-4", why="retry")
    last = read_history(s3, settings)[-1]
    assert (last.alias, last.to_version, last.who, last.why) == ("champion", v3, "run-4", "retry (recorded on a retry)")

    # The command a person runs.
    env = subprocess_env({"CT_MODEL_NAME": settings.model_name, "CT_MODEL": ""})
    command = [sys.executable, "-m", "include.continuous_training", "history"]
    at = subprocess.run([*command, "--at", while_v1.isoformat()], env=env, cwd=PROJECT_ROOT, capture_output=True)
    assert at.returncode == 0, at.stderr.decode()
    assert f"version {v1} was the champion" in at.stdout.decode()
    assert "moved by run-1: the first model: floor passed" in at.stdout.decode()
    full = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    assert f"champion: v{v1} -> v{v2}  by alice (approval in run-2): beat v1 by +0.02 AUC" in full.stdout
    assert f"challenger: v{v3} cleared  by run-3" in full.stdout
