"""The README's development path, run as written (``bash -e``) in a fresh clone, from a user's shell.

The block under the ``dev path`` marker of README.md runs in a ``git clone`` of this repository at
HEAD, with this session's venv linked in as ``.venv`` (so ``make venv`` has nothing to install), in an
environment without the venv on PATH and without the Airflow, MLflow, S3 and CT_ settings the test
session sets for itself. Then what the block left behind is read back: the ingest run curated the
batch (the Asset event in the Airflow metadata DB), training registered and promoted a champion (the
MLflow DB), the drift check ran and decided not to retrain, ``make services-status``
answered healthy while up and "not running" after ``make services-down``, and no process the services
started is left.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devtools.processes import group_members
from tests.conftest import ROOT
from tests.readme import commands, dev_path

pytestmark = pytest.mark.timeout(1500)

# The test session's own settings: a user's shell has none of them.
FOREIGN = ("CT_", "AIRFLOW", "MLFLOW_", "AWS_", "PYTHONPATH", "VIRTUAL_ENV")
REQUIREMENTS = ("requirements.txt", "requirements-dev.txt", "constraints.txt")
BLOCK_TIMEOUT = 1200


def users_shell() -> dict[str, str]:
    """This environment without the session's settings and without the venv's scripts on PATH."""
    venv_bins = {str(Path(sys.executable).parent), str(Path(sys.prefix) / "bin"), str(ROOT / ".venv" / "bin")}
    env = {key: value for key, value in os.environ.items() if not key.startswith(FOREIGN)}
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p not in venv_bins)
    return env


def fresh_clone(target: Path) -> Path:
    """A ``git clone`` of this repository at HEAD in ``target``, this venv linked in as ``.venv``.

    The requirement files get the venv's install stamp as their time, so ``make`` sees the venv as
    made from them (a clone's files are newer than any stamp) and installs nothing.
    """
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"{ROOT} is not a git checkout: no fresh clone to make")
    stamp = Path(sys.prefix) / ".installed"
    if not stamp.exists():
        pytest.skip(f"{sys.prefix} was not made by `make venv` (no {stamp.name}): the clone's make would install")
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(target)], check=True)
    subprocess.run(["git", "-C", str(target), "checkout", "--quiet", head], check=True)
    (target / ".venv").symlink_to(Path(sys.prefix))
    made = stamp.stat().st_mtime
    for name in REQUIREMENTS:
        os.utime(target / name, (made, made))
    return target


def finished_runs(output: str) -> dict[str, str]:
    """``dag_id -> state`` of every ``DagRun Finished`` line ``airflow dags test`` printed."""
    return dict(re.findall(r"DagRun Finished: dag_id=(\w+),.*?, state=(\w+),", output))


def rows(database: Path, query: str) -> list[Any]:
    with sqlite3.connect(database) as connection:
        return connection.execute(query).fetchall()


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The dev path block, run once in a fresh clone: its exit status, output and the clone."""
    clone = fresh_clone(tmp_path_factory.mktemp("devpath") / "clone")
    block = dev_path()
    script = clone.parent / "dev_path.sh"
    script.write_text(block)
    env = users_shell()
    try:
        result = subprocess.run(
            ["bash", "-e", str(script)],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
    finally:  # a block that failed half-way must not leave its servers running
        subprocess.run(["make", "services-down"], cwd=clone, env=env, capture_output=True, timeout=120)
    after = subprocess.run(["make", "services-status"], cwd=clone, env=env, capture_output=True, text=True)
    (clone.parent / "dev_path.out").write_text(result.stdout)
    return {"clone": clone, "block": block, "returncode": result.returncode, "output": result.stdout, "after": after}


def test_the_block_runs_as_written_from_a_fresh_clone(ran):
    assert ran["returncode"] == 0, f"the README's dev path failed:\n{ran['output'][-6000:]}"


def test_services_up_prints_the_next_three_commands_of_the_block(ran):
    printed = ran["output"].split("next:\n", 1)[1].splitlines()[:3]
    assert [line.strip() for line in printed] == commands(ran["block"])[1:4]


def test_the_ingest_run_curated_the_batch(ran):
    assert finished_runs(ran["output"]).get("ingest_new_data") == "success", ran["output"][-4000:]
    events = rows(
        ran["clone"] / ".services" / "airflow" / "airflow.db",
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE e.source_dag_id = 'ingest_new_data'",
    )
    assert len(events) == 1, events
    extra = json.loads(events[0][0])
    written = re.search(r"wrote 5000 rows to s3://([^/]+)/(\S+)", ran["output"])
    assert written, "python -m devtools.datasets did not report the batch it wrote"
    bucket, key = written.groups()
    assert extra["source_key"] == key
    assert extra["uri"].startswith(f"s3://{bucket}/curated/")
    assert extra["rows"] + extra["bad_rows"] == 5000
    assert extra["rows"] > 0


def test_training_promoted_a_champion_that_the_endpoint_served(ran):
    assert finished_runs(ran["output"]).get("train_and_deploy") == "success", ran["output"][-4000:]
    aliases = rows(ran["clone"] / ".services" / "mlflow.db", "SELECT alias, version FROM registered_model_aliases")
    assert ("champion", 1) in aliases
    assert re.search(r"smoke test of version 1: ok", ran["output"])


def test_the_drift_check_ran_and_decided_not_to_retrain(ran):
    assert finished_runs(ran["output"]).get("monitor_drift") == "success", ran["output"][-4000:]
    decisions = re.findall(r"^(retrain|no_drift|skip): ", ran["output"], flags=re.MULTILINE)
    assert decisions in (["no_drift"], ["skip"]), ran["output"][-4000:]


def test_services_status_while_up_and_after_down(ran):
    section = ran["output"].split("-m devtools.services status\n", 1)[1].split("-m devtools.services down", 1)[0]
    states = dict(re.findall(r"^(\w+)\s+(healthy|DOWN|ready|MISSING)\b", section, flags=re.MULTILINE))
    assert states == {"s3": "healthy", "mlflow": "healthy", "serving": "healthy", "airflow": "ready"}, section
    assert ran["after"].returncode != 0  # make: 2 when the recipe (status: 1) fails
    assert "not running" in ran["after"].stdout


def test_services_down_left_no_process_behind(ran):
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+), log ", ran["output"])]
    assert len(pids) == 3, ran["output"][:2000]
    assert {pid: group_members(pid) for pid in pids} == {pid: [] for pid in pids}
