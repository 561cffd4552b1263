"""The loopback launcher: real servers up, healthy, wired together, and gone after `down`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.services import LocalServices, http_ok
from tests.integration.conftest import keys_under

ROOT = Path(__file__).resolve().parents[2]


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_cli_up_status_down_leaves_no_process_behind_and_deletes_nothing(tmp_path):
    """up / status / down, then up again: down deletes nothing, and since the S3 server was in memory the
    next up must not keep a registry whose artifacts are gone (one cycle checks both: ~80 s each)."""
    import mlflow

    state = tmp_path / "stack"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "devtools.services"]

    up = subprocess.run([*cli, "up", "--state-dir", str(state)], env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stdout + up.stderr
    stack = LocalServices(state_dir=state)
    processes = stack.load_state()
    try:
        assert set(processes) == {"s3", "mlflow", "serving"}
        assert f"source {state.resolve() / 'env.sh'}" in up.stdout
        for proc in processes.values():
            assert proc.url.startswith("http://127.0.0.1:")
            assert _group_members(proc.pid), f"{proc.name} is not running"
        status = subprocess.run([*cli, "status", "--state-dir", str(state)], env=env, capture_output=True, text=True)
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("healthy") == 3
        assert f"airflow ready    {state.resolve() / 'airflow'}" in status.stdout
        assert (state / "airflow" / "airflow.db").exists(), "the Airflow metadata DB was not migrated"
        env_sh = (state / "env.sh").read_text()
        assert f"CT_S3_ENDPOINT_URL={processes['s3'].url}" in env_sh
        assert "AIRFLOW_CONN_AWS_CT=" in env_sh
        assert f"CT_SERVING_URL={processes['serving'].url}" in env_sh
        assert len(stack.admin_token) >= 24
        assert f"CT_SERVING_ADMIN_TOKEN={stack.admin_token}" in env_sh
        assert (state / "env.sh").stat().st_mode & 0o077 == 0, "the token file must not be world-readable"
        sourced = subprocess.run(
            ["bash", "-c", f"source {state / 'env.sh'} && command -v python airflow && env"],
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        venv = Path(sys.executable).parent
        assert sourced.splitlines()[:2] == [str(venv / "python"), str(venv / "airflow")]
        assert f"AIRFLOW_HOME={state.resolve() / 'airflow'}\n" in sourced
        assert f"AIRFLOW__CORE__DAGS_FOLDER={ROOT / 'dags'}\n" in sourced
        assert f"PYTHONPATH={ROOT}\n" in sourced
        assert "AIRFLOW__CORE__LOAD_EXAMPLES=False\n" in sourced
        assert f"AIRFLOW__CORE__PLUGINS_FOLDER={ROOT / 'plugins'}\n" in sourced
        # The local stack's poke interval (2 s unless this process's environment says otherwise).
        assert f"CT_SENSOR_POKE_SECONDS={os.environ.get('CT_SENSOR_POKE_SECONDS', '2')}\n" in sourced
        mlflow.MlflowClient(processes["mlflow"].url).create_registered_model("left-from-the-first-up")
    finally:
        subprocess.run([*cli, "down", "--state-dir", str(state)], env=env, capture_output=True, check=True)

    for proc in processes.values():
        assert _group_members(proc.pid) == [], f"{proc.name} left processes behind"
        assert not http_ok(proc.health_url)
    assert not (state / "state.json").exists()
    status = subprocess.run([*cli, "status", "--state-dir", str(state)], env=env, capture_output=True, text=True)
    assert status.returncode == 1
    assert (state / "mlflow.db").exists(), "down must delete nothing"
    assert (state / "airflow" / "airflow.db").exists(), "down must delete nothing"

    again = subprocess.run([*cli, "up", "--state-dir", str(state)], env=env, capture_output=True, text=True)
    try:
        assert again.returncode == 0, again.stdout + again.stderr
        url = LocalServices(state_dir=state).load_state()["mlflow"].url
        assert [model.name for model in mlflow.MlflowClient(url).search_registered_models()] == []
    finally:
        subprocess.run([*cli, "down", "--state-dir", str(state)], env=env, capture_output=True, check=True)


def test_mlflow_keeps_artifacts_in_the_s3_bucket_not_on_disk(services, s3, settings, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(services.env()["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("launcher-check")
    with mlflow.start_run() as run:
        mlflow.log_dict({"hello": "s3"}, "probe/hello.json")
    keys = keys_under(s3, settings.s3_bucket, "mlflow/")
    assert any(key.endswith(f"{run.info.run_id}/artifacts/probe/hello.json") for key in keys)
    assert not (tmp_path / "mlruns").exists()
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/probe/hello.json") == {"hello": "s3"}


def test_the_project_bucket_exists_on_the_s3_server(s3, settings):
    names = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    assert settings.s3_bucket in names


@pytest.mark.parametrize("name", ["s3", "mlflow", "serving"])
def test_services_listen_on_loopback_only(services, name):
    assert services.processes[name].url.startswith("http://127.0.0.1:")
