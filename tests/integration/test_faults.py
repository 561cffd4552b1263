"""Faults injected into real processes: what is left behind, and whether the retry makes it whole."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest

from devtools.datasets import BatchSpec, generate_batch
from include.continuous_training.registry import register_challenger, tracking_client
from include.continuous_training.training import assemble_training_data, train_challenger
from tests.conftest import ROOT
from tests.integration.conftest import land_and_curate

# What the train_challenger task runs, in a process of its own so that it can be SIGKILLed; with
# thousands of rounds so the kill lands in the fit, not after it.
TRAIN = """
import dataclasses, json, sys
from include.continuous_training.config import load_settings
from include.continuous_training.storage import s3_client
from include.continuous_training.training import train_challenger
settings = dataclasses.replace(load_settings(), model_name=sys.argv[1], mlflow_experiment=sys.argv[1])
data = json.loads(sys.argv[2])
train_challenger(s3_client(settings), settings, data, dag_run_id=sys.argv[3],
                 overrides={"num_boost_round": 5000, "early_stopping_rounds": 5000})
"""


@pytest.fixture
def isolated(services, empty_bucket):
    from include.continuous_training.config import load_settings
    from include.continuous_training.storage import s3_client

    name = f"fault-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(load_settings(), model_name=name, mlflow_experiment=name)
    return settings, s3_client(settings)


def _runs(client, settings, dag_run_id):
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`ct.dag_run_id` = '{dag_run_id}'")


def test_training_killed_mid_fit_then_retried_gives_exactly_one_version(isolated):
    settings, s3 = isolated
    start = datetime(2026, 11, 1, tzinfo=UTC)
    land_and_curate(s3, settings, {"fault.parquet": generate_batch(BatchSpec(rows=60_000, seed=71, start=start))})
    data = assemble_training_data(s3, settings)
    client = tracking_client(settings)
    dag_run_id = f"manual__fault-{uuid.uuid4().hex[:6]}"

    # Try 1: SIGKILLed while it fits (its MLflow run exists and is RUNNING: the fit has begun).
    process = subprocess.Popen(
        [sys.executable, "-c", TRAIN, settings.model_name, json.dumps(data), dag_run_id],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not any(r.info.status == "RUNNING" for r in _runs(client, settings, dag_run_id)):
        assert process.poll() is None, "the training process ended before it could be killed"
        assert time.monotonic() < deadline, "the training run never started"
        time.sleep(0.2)
    time.sleep(1.0)  # well into the fit
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    [killed] = _runs(client, settings, dag_run_id)
    assert killed.info.status == "RUNNING"  # what a dead try leaves behind

    # Try 2 (the task's retry): same DAG run, same data.
    model = train_challenger(s3, settings, data, dag_run_id=dag_run_id)
    runs = {r.info.run_id: r.info.status for r in _runs(client, settings, dag_run_id)}
    assert runs == {killed.info.run_id: "KILLED", model["run_id"]: "FINISHED"}

    # Try 3 (a retry of a later task re-running this one): reuses the finished run.
    assert train_challenger(s3, settings, data, dag_run_id=dag_run_id)["run_id"] == model["run_id"]
    version = register_challenger(client, settings, model["run_id"], model["model_id"], {})
    assert register_challenger(client, settings, model["run_id"], model["model_id"], {}) == version
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    assert [v.version for v in versions] == [version]
    assert versions[0].run_id == model["run_id"]


def test_an_endpoint_killed_mid_deploy_restarts_on_the_fleets_state_and_the_rollback_brings_the_champion_back(
    isolated, tmp_path
):
    """Deploy v2 (not yet smoke-tested nor promoted), SIGKILL the endpoint, start it again.

    The desired deployment lives in S3 for every replica (issue 16), so the restarted process serves
    what the others serve, v2, instead of drifting apart from them. What keeps an unfinished deploy
    from staying is the DAG: its smoke test fails against the dead endpoint and the rollback task
    (``rollback_to_champion``) writes the champion back, which every replica, restarted or not, follows.
    Before shared state the restarted endpoint alone fell back to
    the champion, and a fleet of several would have split between versions.
    """
    from include.continuous_training.deployment import LocalEndpoint, rollback_to_champion
    from include.continuous_training.registry import promote_champion
    from tests.integration.conftest import Endpoint

    settings, s3 = isolated
    client = tracking_client(settings)
    versions = []
    for day in (1, 2):
        start = datetime(2026, 11, day, tzinfo=UTC)
        land_and_curate(
            s3, settings, {f"kill{day}.parquet": generate_batch(BatchSpec(rows=3000, seed=90 + day, start=start))}
        )
        model = train_challenger(s3, settings, assemble_training_data(s3, settings), dag_run_id=f"kill-{day}")
        versions.append(register_challenger(client, settings, model["run_id"], model["model_id"], {}))
    v1, v2 = versions
    promote_champion(client, settings, v1)
    env = {"CT_MODEL_NAME": settings.model_name, "CT_SERVING_ADMIN_TOKEN": "t" * 24}
    state_dir = tmp_path / "serving"

    def started() -> Endpoint:
        endpoint = Endpoint.start(state_dir, env)
        deadline = time.monotonic() + 60
        while endpoint.served_version() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        return endpoint

    first = started()
    try:
        assert first.served_version() == v1
        LocalEndpoint(first.url, env["CT_SERVING_ADMIN_TOKEN"]).deploy(v2)
        assert first.served_version() == v2  # deployed, but the endpoint dies before smoke test and promotion
        first.kill()
    finally:
        first.stop()  # a failure above must not leave the endpoint running (a killed one: nothing to do)

    second = started()
    try:
        assert second.served_version() == v2, "a restarted replica must serve what the fleet serves"
        rolled = dataclasses.replace(
            settings,
            serving_url=second.url,
            serving_admin_token=env["CT_SERVING_ADMIN_TOKEN"],
            deployment_target="local",
        )
        assert rollback_to_champion(rolled, rolled_back=v2) == v1
        assert second.served_version() == v1
        assert client.get_model_version_by_alias(settings.model_name, "champion").version == v1
    finally:
        second.stop()


def test_mlflow_down_during_registration_then_retried_registers_once(tmp_path, monkeypatch):
    """A stack of its own (its MLflow server is killed and restarted on the same port and store)."""
    from devtools.services import LocalServices
    from include.continuous_training.config import load_settings
    from include.continuous_training.registry import CHALLENGER, load_model, promote_champion
    from include.continuous_training.storage import s3_client

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail now; the Airflow task retry retries
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with LocalServices(state_dir=tmp_path / "stack", with_endpoint=False) as stack:
        for key, value in stack.env().items():
            monkeypatch.setenv(key, value)
        settings = dataclasses.replace(load_settings(), model_name="down", mlflow_experiment="down")
        s3 = s3_client(settings)
        client = tracking_client(settings)
        models = []
        for day in (1, 2):
            start = datetime(2026, 11, day, tzinfo=UTC)
            batch = generate_batch(BatchSpec(rows=3000, seed=110 + day, start=start))
            land_and_curate(s3, settings, {f"down{day}.parquet": batch})
            models.append(
                train_challenger(s3, settings, assemble_training_data(s3, settings), dag_run_id=f"down-{day}")
            )
        v1 = register_challenger(client, settings, models[0]["run_id"], models[0]["model_id"], {})
        promote_champion(client, settings, v1)

        stack.stop_service("mlflow")
        with pytest.raises(Exception, match=r"(?i)connection|refused|max retries"):
            register_challenger(client, settings, models[1]["run_id"], models[1]["model_id"], {})
        stack.restart("mlflow")

        # Died half-way: the version exists, the alias was never set. The retry must finish it, not add one.
        half = client.create_model_version(
            settings.model_name,
            f"models:/{models[1]['model_id']}",
            run_id=models[1]["run_id"],
            model_id=models[1]["model_id"],
        )
        v2 = register_challenger(client, settings, models[1]["run_id"], models[1]["model_id"], {})
        assert v2 == str(half.version)
        versions = sorted(v.version for v in client.search_model_versions(f"name = '{settings.model_name}'"))
        assert versions == [v1, v2]
        aliases = client.get_registered_model(settings.model_name).aliases
        assert aliases == {"champion": v1, CHALLENGER: v2}  # the champion never moved
        assert load_model(f"models:/{settings.model_name}/{v2}").booster is not None  # artifacts all there


def test_s3_cut_at_every_request_of_an_ingest_then_retried_curates_exactly_once(services, empty_bucket):
    """The ingest of one object makes a handful of S3 requests. For each of them in turn: cut S3 right
    there, see the try fail, restore, retry (same run, as Airflow's task retry does), and check the
    outcome: one curated object, complete; one ``done`` entry; landing untouched."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    from devtools.datasets import to_bytes
    from include.continuous_training.config import load_settings
    from include.continuous_training.ingestion import find_new_objects, ingest_object, read_manifest
    from include.continuous_training.storage import list_objects, read_parquet_object, s3_client
    from tests.integration.conftest import CuttableProxy

    settings = load_settings()
    direct = s3_client(settings)
    proxy = CuttableProxy(int(services.processes["s3"].url.rsplit(":", 1)[1]))
    through_proxy = boto3.client(
        "s3", endpoint_url=proxy.url, config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5)
    )
    body = to_bytes(generate_batch(BatchSpec(rows=2000, seed=121)), "parquet")
    try:
        # A clean ingest through the proxy: how many requests one takes.
        direct.put_object(Bucket=settings.s3_bucket, Key=settings.landing_prefix + "probe.parquet", Body=body)
        [probe] = find_new_objects(direct, settings)
        proxy.cut_at(None)
        ingest_object(through_proxy, settings, probe, run_id="probe")
        steps = proxy.requests
        assert steps >= 4
        print(f"\none ingest = {steps} S3 requests; cutting at each in turn")

        for step in range(steps):
            key = f"{settings.landing_prefix}cut-{step}.parquet"
            direct.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)
            [ref] = [r for r in find_new_objects(direct, settings) if r.key == key]
            proxy.cut_at(step)
            with pytest.raises((BotoCoreError, ClientError)):
                ingest_object(through_proxy, settings, ref, run_id=f"run-{step}")
            proxy.restore()
            result = ingest_object(through_proxy, settings, ref, run_id=f"run-{step}")  # the retry
            assert result.status == "ingested", (step, result.reason)
            again = ingest_object(direct, settings, ref, run_id=f"run-{step}")
            assert again.curated_uri == result.curated_uri, step
            assert result.curated_uri is not None
            curated_key = result.curated_uri.split(f"{settings.s3_bucket}/", 1)[1]
            frame, _ = read_parquet_object(direct, settings.s3_bucket, curated_key)
            assert len(frame) == 2000, step  # complete, not a partial object
            assert direct.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read() == body
        done = [e for e in read_manifest(direct, settings) if e.source.key.startswith(settings.landing_prefix + "cut-")]
        assert len(done) == steps
        assert all(e.status == "ingested" for e in done)
        curated = list(list_objects(direct, settings.s3_bucket, settings.curated_prefix))
        assert len(curated) == steps + 1  # one per object (and the probe), no duplicates, no leftovers
    finally:
        proxy.close()
