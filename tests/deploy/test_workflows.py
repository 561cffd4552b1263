"""The GitHub Actions workflow: valid against the workflow schema, and it runs what it promises.

GitHub cannot run here, so the file is checked, not run: the schema (vendored by check-jsonschema from
SchemaStore) and that the audit there cannot pass vacuously.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def test_valid_against_the_github_workflow_schema(workflow: dict[Any, Any]) -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "github-workflows.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    # YAML 1.1 reads the `on:` key as True; GitHub (and the schema) mean the string "on"
    document = {("on" if key is True else key): value for key, value in workflow.items()}
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, errors
    # the schema check itself is not vacuous: a job without runs-on is refused
    broken = json.loads(json.dumps(document))
    del broken["jobs"]["audit"]["runs-on"]
    assert list(validator.iter_errors(broken))


def test_audit_is_required_and_the_tests_are_the_ci_script(workflow: dict[Any, Any]) -> None:
    jobs = workflow["jobs"]
    assert workflow["permissions"] == {"contents": "read"}
    for job in jobs.values():
        runs = [step for step in job["steps"] if "run" in step]
        assert all(step.get("env", {}).get("CT_AUDIT_REQUIRED") == "1" for step in runs)
        python = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python"))
        assert python["with"]["python-version"] == "3.11"
    assert [step["run"] for step in jobs["audit"]["steps"] if "run" in step] == ["make audit"]
    assert [step["run"] for step in jobs["test"]["steps"] if "run" in step] == ["bash .ci/run"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
