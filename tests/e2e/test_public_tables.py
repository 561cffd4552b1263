"""The loop on public tables the project did not design, driven by nothing but a model file per table.

Three tables of different shapes ship inside PyPI packages (``devtools.public_tables``): penguins
(multiclass, pandas categoricals, missing values, no id, no event time), breast cancer (binary with word
labels, 30 numeric columns with spaces in their names) and diabetes (regression, numeric only). For
each: ``init-model`` writes the model file and its suite from a sample; then, in ONE Airflow (one
metadata DB, the real DAG files, ``dag.test()``), the model's own DAGs ingest two batches (Parquet with
categoricals, and CSV), train, gate, register, deploy to the model's own endpoint process, smoke-test and
promote; drifted traffic goes through that endpoint; the model's drift DAG measures it and triggers a
retraining, which runs. The three models run side by side: each keeps to its own S3 prefix, registry
entry, Asset and endpoint.

Figures for the closing note (time from init-model to a served champion, holdout metrics, the drift
decision) are printed (``-s``) and written to ``$CT_PUBLIC_TABLES_REPORT`` when set.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.datasets import to_bytes
from devtools.public_tables import TABLES, load_table, shifted, split_batches
from devtools.services import free_port
from tests.conftest import DAGS_FOLDER, ROOT
from tests.integration.conftest import Endpoint, keys_under, run_dag

ORDER = ("penguins", "breast_cancer", "diabetes")
# Small tables: smaller smoke test and bootstrap, drift decided on a few hundred rows, no slice gate rows.
TEST_SETTINGS = {
    "CT_BOOTSTRAP_SAMPLES": 200,
    "CT_SMOKE_REQUESTS": 40,
    "CT_DRIFT_MIN_ROWS": 100,
    "CT_INFERENCE_FLUSH_SECONDS": 0.5,
    "CT_SERVING_WORKERS": 1,
}


@dataclass
class PublicModel:
    name: str
    settings: Any
    endpoint: Endpoint
    started: float  # when init-model was run
    report: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def public_models(services, airflow_db, tmp_path_factory) -> Iterator[dict[str, PublicModel]]:
    """A models folder with one init-model'd file per table, an endpoint per model, the DAGs parsed."""
    from include.continuous_training.config import load_settings

    home = tmp_path_factory.mktemp("public-tables")
    models_dir = home / "models"
    token = secrets.token_urlsafe(16)
    patch = pytest.MonkeyPatch()
    patch.setenv("CT_MODELS_DIR", str(models_dir))
    patch.setenv("CT_SERVING_ADMIN_TOKEN", token)
    models: dict[str, PublicModel] = {}
    try:
        for name in ORDER:
            table = TABLES[name]
            reference = home / f"{name}.parquet"
            load_table(name).to_parquet(reference)
            started = time.monotonic()
            command = ["init-model", "--reference", str(reference), "--label", table.label, "--name", name]
            init = subprocess.run(
                [sys.executable, "-m", "include.continuous_training", *command, "--models-dir", str(models_dir)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                timeout=300,
            )
            assert init.returncode == 0, init.stdout + init.stderr
            print(f"\n$ init-model {name}\n{init.stdout}")
            path = models_dir / f"{name}.yaml"
            document = yaml.safe_load(path.read_text())
            assert document["task"] == table.task, init.stdout  # inferred, not told
            port = free_port()
            document.setdefault("settings", {}).update(TEST_SETTINGS, CT_SERVING_URL=f"http://127.0.0.1:{port}")
            path.write_text(yaml.safe_dump(document, sort_keys=False))
            env = {"CT_MODEL": name, "CT_MODELS_DIR": str(models_dir), "CT_SERVING_ADMIN_TOKEN": token}
            endpoint = Endpoint.start(home / f"serving-{name}", env, workers=1, port=port)
            models[name] = PublicModel(name, load_settings(model=name), endpoint, started)
        yield models
    finally:
        for model in models.values():
            model.endpoint.stop()
        patch.undo()
        report = {name: model.report for name, model in models.items()}
        print("\npublic tables:", json.dumps(report, indent=2, default=str))
        if os.environ.get("CT_PUBLIC_TABLES_REPORT"):
            Path(os.environ["CT_PUBLIC_TABLES_REPORT"]).write_text(json.dumps(report, indent=2, default=str))


@pytest.fixture(scope="module")
def dagbag(public_models):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    return bag


def champion_of(settings: Any) -> Any:
    from include.continuous_training.registry import CHAMPION, tracking_client, version_by_alias

    return version_by_alias(tracking_client(settings), settings.model_name, CHAMPION)


def records_of(frame: Any, settings: Any) -> list[dict[str, Any]]:
    """Rows as the JSON a client sends: features only, missing values as null."""
    features = frame[list(settings.feature_columns)].astype(object)
    return [
        {k: (None if v is None or v != v else (v.item() if hasattr(v, "item") else v)) for k, v in row.items()}
        for row in features.to_dict(orient="records")
    ]


def triggered_conf(dag_id: str) -> dict[str, Any]:
    """The conf of the run monitor_drift triggered (queued: no scheduler runs it inside dag.test())."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id)).all()
        triggered = [run for run in runs if (run.conf or {}).get("report_uri")]
        for run in triggered:
            run.state = DagRunState.SUCCESS  # it is run below by dag.test(), with the same conf
        return dict(triggered[-1].conf or {}) if triggered else {}


@pytest.mark.parametrize("name", ORDER)
def test_the_loop_closes_on_a_public_table(public_models, dagbag, s3, name):
    model = public_models[name]
    settings, endpoint = model.settings, model.endpoint
    table = load_table(name)
    first, second = split_batches(table, 2, seed=7)
    s3.put_object(Bucket=settings.s3_bucket, Key=f"{settings.landing_prefix}a.parquet", Body=to_bytes(first, "parquet"))
    s3.put_object(Bucket=settings.s3_bucket, Key=f"{settings.landing_prefix}b.csv", Body=to_bytes(second, "csv"))

    ingest = run_dag(dagbag, f"ingest_new_data_{name}")
    assert ingest.state == "success", ingest.task_states
    assert ingest.states_of("ingest_batch") == {0: "success", 1: "success"}
    assert keys_under(s3, settings.s3_bucket, settings.quarantine_prefix) == []  # its own suite accepts its data

    training = run_dag(dagbag, f"train_and_deploy_{name}")
    assert training.state == "success", training.task_states
    assert training.states_of("promote_champion") == {-1: "success"}
    champion = champion_of(settings)
    assert champion is not None
    deadline = time.monotonic() + 30
    while endpoint.served_version() != str(champion.version) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert endpoint.served_version() == str(champion.version)
    model.report["seconds_from_init_model_to_served_champion"] = round(time.monotonic() - model.started, 1)

    from include.continuous_training.registry import tracking_client

    metrics = tracking_client(settings).get_run(champion.run_id).data.metrics
    model.report["champion_holdout_metrics"] = {k: round(v, 4) for k, v in sorted(metrics.items()) if "holdout" in k}
    assert model.report["champion_holdout_metrics"], sorted(metrics)

    numeric = list(settings.numeric_columns)[:4]
    traffic = shifted(table.sample(n=150, replace=True, random_state=3), numeric, factor=1.8)
    for start in range(0, len(traffic), 50):
        status, body = endpoint.post("/predict", {"records": records_of(traffic.iloc[start : start + 50], settings)})
        assert status == 200, body
    deadline = time.monotonic() + 30
    while not keys_under(s3, settings.s3_bucket, settings.inference_prefix) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # the last flush

    drift = run_dag(dagbag, f"monitor_drift_{name}")
    assert drift.state == "success", drift.task_states
    conf = triggered_conf(f"train_and_deploy_{name}")
    model.report["drift_decision"] = (conf.get("decision") or {}).get("action", "no retraining")
    assert drift.states_of("trigger_retraining") == {-1: "success"}, drift.task_states
    assert conf["report_uri"].startswith(f"s3://{settings.s3_bucket}/{settings.reports_prefix}")

    retraining = run_dag(dagbag, f"train_and_deploy_{name}", run_conf=conf)
    assert retraining.state in {"success", "failed"}, retraining.task_states
    decided = retraining.states_of("promote_champion") == {-1: "success"}
    model.report["retraining"] = "promoted" if decided else "rejected (champion kept)"
    assert champion_of(settings) is not None  # a champion serves whatever the retraining decided
    assert endpoint.served_version() == str(champion_of(settings).version)


def test_the_models_ran_side_by_side_without_touching_each_other(public_models, s3):
    from include.continuous_training.registry import tracking_client

    names = {model.settings.model_name for model in public_models.values()}
    assert len(names) == len(public_models)
    everything = keys_under(s3, public_models["penguins"].settings.s3_bucket, "")
    for name, model in public_models.items():
        prefix = f"{name}/"
        assert model.settings.landing_prefix.startswith(prefix)
        mine = [key for key in everything if key.startswith(prefix)]
        assert any(key.startswith(model.settings.curated_prefix) for key in mine)
        assert any(key.startswith(model.settings.inference_prefix) for key in mine)
        versions = tracking_client(model.settings).search_model_versions(f"name='{model.settings.model_name}'")
        assert {v.run_id for v in versions}  # its own registry entry, with its own runs
        status, metadata = model.endpoint.get("/metadata")
        assert status == 200
        assert metadata["model_name"] == model.settings.model_name, metadata
