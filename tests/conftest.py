"""Shared fixtures: an isolated Airflow home, and the real loopback services started once per run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = ROOT / "dags"
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ct-test-airflow-"))

# Airflow reads its configuration once, at import: point it at a throw-away home before any test
# imports it, so a developer's own AIRFLOW_HOME is never touched.
os.environ.update(
    AIRFLOW_HOME=str(_AIRFLOW_HOME),
    AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    CT_SENSOR_POKE_SECONDS="1",
    CT_SENSOR_TIMEOUT_SECONDS="4",
    # Shared 2-core machines stall for hundreds of ms now and then; the over-budget path has its own test.
    CT_SMOKE_P99_MS="3000",
    PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder so `-m "not integration"` gives the quick loop."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT).parts
        if len(parts) > 1 and parts[1] in {"integration", "e2e"}:
            item.add_marker(getattr(pytest.mark, parts[1]))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """moto_server + MLflow server on loopback; the environment points every client at them."""
    from devtools.services import LocalServices
    from include.continuous_training.config import load_settings

    stack = LocalServices(state_dir=tmp_path_factory.mktemp("services"), settings=load_settings())
    stack.start()
    saved = {key: os.environ.get(key) for key in stack.env()}
    os.environ.update(stack.env())
    try:
        yield stack
    finally:
        stack.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def settings(services: Any) -> Any:
    from include.continuous_training.config import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def s3(settings: Any) -> Any:
    from include.continuous_training.storage import s3_client

    return s3_client(settings)


@pytest.fixture
def empty_bucket(s3: Any, settings: Any) -> Any:
    """Each test starts from a bucket with nothing but MLflow's artifacts in it."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.s3_bucket):
        for item in page.get("Contents", []):
            if not item["Key"].startswith("mlflow/"):
                s3.delete_object(Bucket=settings.s3_bucket, Key=item["Key"])
    return s3


@pytest.fixture(scope="session")
def metadata_db() -> Path:
    """A migrated SQLite metadata DB in the throw-away AIRFLOW_HOME, without the other services."""
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True)
    return _AIRFLOW_HOME / "airflow.db"


@pytest.fixture(scope="session")
def airflow_db(services: Any, metadata_db: Path) -> Path:
    """The metadata DB, with the loopback services running and the environment pointing at them."""
    return metadata_db


@pytest.fixture(scope="session")
def dagbag(services: Any) -> Any:
    """The project's DAGs, parsed after the services' environment is in place."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))
