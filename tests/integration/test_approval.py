"""`CT_APPROVAL=required`: a person approves or rejects a promotion through Airflow's HITL REST API.

`train_and_deploy` runs in-process (`dag.test()`), against a real endpoint process; the reviewer
answers through a real `airflow api-server` process on the same metadata DB, as a user of the
Required Actions page (or a script) would. Approve → the candidate becomes the champion on the
endpoint and the version carries who approved; reject → it is rolled back, the champion serves on.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.airflow_api import AirflowAPI
from devtools.datasets import BatchSpec, generate_batch
from devtools.processes import kill_group, spawn_group
from devtools.services import PROJECT_ROOT, free_port, http_ok, subprocess_env, venv_bin
from include.continuous_training.registry import tracking_client
from tests.integration.conftest import Endpoint, Webhook, land_and_curate, run_dag
from tests.integration.test_deployment import request_record

DAG_ID = "train_and_deploy"
DAY = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def airflow_api(airflow_db, tmp_path_factory) -> Any:
    """Airflow's api-server (its own process) on the tests' metadata DB; a client logged in as ``reviewer``."""
    home = tmp_path_factory.mktemp("api-server")
    port = free_port()
    passwords = home / "passwords.json"
    env = subprocess_env(
        {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "reviewer:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        }
    )
    log = home / "api-server.log"
    argv = [venv_bin("airflow"), "api-server", "--apps", "core", "--host", "127.0.0.1", "--port", str(port)]
    process = spawn_group(argv, env, PROJECT_ROOT, log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not (passwords.exists() and http_ok(f"{url}/api/v2/monitor/health")):
            assert process.poll() is None, f"the api-server exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"the api-server did not come up: {log.read_text()[-2000:]}"
            time.sleep(0.5)
        yield AirflowAPI(url, "reviewer", json.loads(passwords.read_text())["reviewer"])
    finally:
        kill_group(process.pid)


@dataclass
class Reviewer:
    """Waits for this DAG's approval request, looks at what the endpoint serves meanwhile, then answers."""

    api: AirflowAPI
    endpoint: Endpoint
    option: str
    comment: str
    request: dict[str, Any] = field(default_factory=dict)
    served_while_waiting: set[str] = field(default_factory=set)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._review, daemon=True)

    def __enter__(self) -> Reviewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=30)

    def _review(self) -> None:
        try:
            deadline = time.monotonic() + 600
            while not (pending := self.api.pending_approvals(DAG_ID)):
                if time.monotonic() > deadline:
                    raise TimeoutError("no approval request within 600 s")
                time.sleep(0.5)
            self.request = pending[0]
            records = [request_record(generate_batch(BatchSpec(rows=50, seed=5)), i) for i in range(50)]
            for record in records:  # the callers' view while the approval is pending
                status, payload = self.endpoint.post("/predict", record)
                self.served_while_waiting.add(str(payload["model_version"]) if status == 200 else f"HTTP {status}")
            ti = self.request["task_instance"]
            self.api.answer(DAG_ID, ti["dag_run_id"], ti["task_id"], self.option, {"comment": self.comment})
        except BaseException as error:  # re-raised in the test
            self.error = error


def _day(i: int, rows: int, **knobs) -> dict:
    return {
        f"day{i}.parquet": generate_batch(BatchSpec(rows=rows, seed=700 + i, start=DAY + timedelta(days=i), **knobs))
    }


@pytest.fixture
def approval_required(monkeypatch, tmp_path, empty_bucket, airflow_db):
    """A fresh model with ``CT_APPROVAL=required`` (no rollout stages), its endpoint, the DAGs parsed so."""
    from airflow.dag_processing.dagbag import DagBag

    from include.continuous_training.config import load_settings
    from tests.conftest import DAGS_FOLDER

    suffix = uuid.uuid4().hex[:8]
    env = {
        "CT_MODEL_NAME": f"approval-{suffix}",
        "CT_MLFLOW_EXPERIMENT": f"approval-{suffix}",
        "CT_BOOTSTRAP_SAMPLES": "200",
        "CT_SERVING_ADMIN_TOKEN": secrets.token_urlsafe(16),
        "CT_DEPLOYMENT_TARGET": "local",
        "CT_SMOKE_REQUESTS": "50",
        "CT_SERVING_POLL_SECONDS": "0.5",
        "CT_ROLLOUT": "direct",
        "CT_APPROVAL": "required",
        "CT_APPROVERS": "reviewer",
    }
    endpoint = Endpoint.start(tmp_path / "serving", env)
    hook = Webhook()
    for key, value in {**env, "CT_SERVING_URL": endpoint.url, "CT_ALERT_WEBHOOK_URL": hook.url}.items():
        monkeypatch.setenv(key, value)
    try:
        yield DagBag(dag_folder=str(DAGS_FOLDER)), load_settings(), endpoint, hook
    finally:
        endpoint.stop()
        hook.close()


def _run_reviewed(dagbag, endpoint, reviewer_api, option: str, comment: str) -> tuple[Any, Reviewer]:
    with Reviewer(reviewer_api, endpoint, option, comment) as reviewer:
        outcome = run_dag(dagbag, DAG_ID)
    if reviewer.error is not None:
        raise reviewer.error
    return outcome, reviewer


def test_approve_promotes_and_reject_rolls_back_through_the_hitl_api(approval_required, airflow_api, s3):
    dagbag, settings, endpoint, hook = approval_required
    client = tracking_client(settings)

    # The first model needs an approval too (it is served beside nothing, so it is deployed to be smoke-tested).
    land_and_curate(s3, settings, _day(0, rows=5000, concept_drift=1.0))
    first, _ = _run_reviewed(dagbag, endpoint, airflow_api, "Approve", "first model, looks fine")
    assert first.state == "success"
    assert endpoint.served_version() == "1"

    # Approve: held back beside the champion (it serves no caller) until the answer, then the champion.
    land_and_curate(s3, settings, _day(1, rows=10000))
    second, reviewer = _run_reviewed(dagbag, endpoint, airflow_api, "Approve", "AUC gain is real")
    assert second.state == "success"
    assert reviewer.served_while_waiting == {"1"}, "an unapproved candidate must answer no caller"
    assert (
        reviewer.request["subject"] == f"Promote {settings.model_name} version 2 to champion? (champion now: version 1)"
    )
    body = reviewer.request["body"]
    assert "**Offline decision: PROMOTE**" in body
    assert "| beats_champion | yes |" in body
    assert "none (`CT_ROLLOUT=direct`)" in body
    assert reviewer.request["assigned_users"] == [{"id": "reviewer", "name": "reviewer"}]
    assert second.states_of("approve_promotion") == {-1: "success"}
    assert second.states_of("rollback_deployment") == {-1: "skipped"}
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == "2"
    assert endpoint.served_version() == "2"
    approval = json.loads(client.get_model_version(settings.model_name, "2").tags["ct.approval"])
    assert (approval["approved_by"], approval["comment"]) == ("reviewer", "AUC gain is real")
    assert approval["approved_at"].startswith(str(datetime.now(UTC).year))

    # Reject: rolled back, the champion serves on, the alert says who rejected and why.
    land_and_curate(s3, settings, _day(2, rows=20000))
    third, reviewer = _run_reviewed(dagbag, endpoint, airflow_api, "Reject", "wait for the quarterly data")
    assert third.state == "failed"
    assert reviewer.served_while_waiting == {"2"}
    assert third.states_of("approve_promotion") == {-1: "failed"}
    assert third.states_of("promote_champion") == {-1: "upstream_failed"}
    assert third.states_of("rollback_deployment") == {-1: "success"}
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == "2"
    assert "challenger" not in client.get_model_version(settings.model_name, "3").aliases
    assert endpoint.served_version() == "2"
    alerts = " ".join(hook.texts())
    assert "version 3 REJECTED by reviewer (wait for the quarterly data)" in alerts

    # The audit trail has every move with who and why: the approver for the promotion, the run for the rollback.
    from include.continuous_training.audit import format_history, read_history

    events = read_history(s3, settings)
    print(format_history(events))  # what `python -m include.continuous_training history` prints
    champion = [(e.from_version, e.to_version) for e in events if e.alias == "champion"]
    assert champion == [(None, "1"), ("1", "2")]
    promoted = next(e for e in events if e.alias == "champion" and e.to_version == "2")
    assert promoted.who.startswith("reviewer (approval in manual__"), promoted
    assert promoted.why.endswith("approved: AUC gain is real")
    assert promoted.record_uri is not None
    assert promoted.record_uri.endswith("/evaluation/decision.json")
    cleared = events[-1]
    assert (cleared.alias, cleared.action, cleared.from_version) == ("challenger", "cleared", "3")
    assert cleared.who == third.run_id

    # The model card of the promoted version: headline, gates, SHAP importance, data, history with the approval.
    tags = client.get_model_version(settings.model_name, "2").tags
    headline = tags["ct.model_card_headline"]
    assert headline.startswith(f"{settings.model_name} v2 trained on {datetime.now(UTC).date().isoformat()} on ")
    assert tags["ct.dataset_version"] in headline
    assert "(15,000 rows, 2026-10-03 to 2026-11-02)" in headline  # the 30-day window ending at the newest event
    run_id = client.get_model_version(settings.model_name, "2").run_id
    assert run_id is not None
    card = Path(client.download_artifacts(run_id, "model_card/model_card.md")).read_text()
    print(card)
    assert f"**{headline}**" in card
    assert "| beats_champion | yes |" in card
    assert "## Feature importance" in card
    assert card.index("| amount |") < card.index("| hour_of_day |") or "| merchant_risk_score |" in card
    assert "/batch@v" in card  # each curated batch with its dataset version
    assert "| champion | 1 | 2 | reviewer (approval in manual__" in card
    assert tags["ct.git_commit"] == client.get_run(run_id).data.tags["mlflow.source.git.commit"]
    html = Path(client.download_artifacts(run_id, "model_card/model_card.html")).read_text()
    assert "<table>" in html
    assert headline in html

    # ... and the endpoint serves it: the headline and dataset version in /metadata, the HTML at /model-card.
    import urllib.request

    status, metadata = endpoint.get("/metadata")
    assert status == 200
    assert metadata["model_version"] == "2"
    assert metadata["dataset_version"] == tags["ct.dataset_version"]
    assert metadata["model_card"]["headline"] == headline
    assert "| champion | 1 | 2 |" in metadata["model_card"]["markdown"]
    with urllib.request.urlopen(endpoint.url + "/model-card", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert headline in response.read().decode()
