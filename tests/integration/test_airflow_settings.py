"""The settings loader against a real (SQLite) Airflow metadata DB, through its command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

MODULE = [sys.executable, "-m", "include.continuous_training.airflow_settings"]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def airflow(*args: str) -> str:
    return subprocess.run([AIRFLOW, *args], capture_output=True, text=True, check=True).stdout


def loader(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MODULE, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_the_repository_file_applies_and_reapplying_changes_nothing(airflow_db):
    first = loader("apply")
    assert first.returncode == 0, first.stderr
    assert "pool gpu:" in first.stdout
    assert "connection aws_ct:" in first.stdout
    assert "gpu" in airflow("pools", "get", "gpu")
    second = loader("apply")
    assert second.returncode == 0, second.stderr
    assert all(line.split(": ", 1)[1].startswith("unchanged") for line in second.stdout.splitlines()), second.stdout


def test_changes_are_applied_and_secrets_never_printed(airflow_db, tmp_path):
    path = tmp_path / "settings.yaml"
    body = """airflow:
  connections:
    - conn_id: ct_test_db
      conn_type: postgres
      conn_host: db.internal
      conn_login: reader
      conn_password: {password}
  pools:
    - pool_name: ct_test_pool
      pool_slot: {slots}
  variables:
    - variable_name: ct_test_variable
      variable_value: {value}
"""
    path.write_text(body.format(password="s3cr3t-first", slots=2, value="one"))
    created = loader("apply", "--file", str(path))
    assert created.returncode == 0, created.stderr
    assert "connection ct_test_db: created" in created.stdout
    path.write_text(body.format(password="s3cr3t-second", slots=3, value="two"))
    updated = loader("apply", "--file", str(path))
    assert updated.returncode == 0, updated.stderr
    assert "connection ct_test_db: updated ['password']" in updated.stdout
    assert "pool ct_test_pool: updated (3 slot(s))" in updated.stdout
    assert "variable ct_test_variable: updated" in updated.stdout
    assert "s3cr3t" not in created.stdout + created.stderr + updated.stdout + updated.stderr
    assert "| 3 " in airflow("pools", "get", "ct_test_pool")
    assert airflow("variables", "get", "ct_test_variable").strip() == "two"
    assert "s3cr3t-second" in airflow("connections", "get", "ct_test_db", "-o", "json")


def test_an_invalid_file_applies_nothing(airflow_db, tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text(
        "airflow:\n  pools:\n    - pool_name: ct_never_created\n      pool_slot: 1\n"
        "  connections:\n    - conn_id: broken\n"
    )
    result = loader("apply", "--file", str(path))
    assert result.returncode == 2
    assert "airflow.connections[0]: conn_type (or conn_uri) is required" in result.stderr
    pools = subprocess.run([AIRFLOW, "pools", "get", "ct_never_created"], capture_output=True, text=True)
    assert pools.returncode != 0
