"""The few calls of Airflow 3's REST API (``/api/v2``) the local stack needs, standard library only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class AirflowAPIError(RuntimeError):
    """Airflow's API answered with an HTTP error; the message names the call and Airflow's answer."""


class AirflowAPI:
    """A client of Airflow's REST API with a JWT from ``/auth/token`` (fetched on first use)."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.base_url = base_url
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None

    def _send(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310 (http(s) only)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310  # nosec B310
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise AirflowAPIError(f"Airflow API {method} {path}: HTTP {error.code}: {detail}") from None
        return json.loads(payload) if payload else None

    def token(self) -> str:
        """The JWT for this user, fetched once."""
        if self._token is None:
            self._token = self._send("POST", "/auth/token", self._credentials, auth=False)["access_token"]
        return self._token

    def forget_token(self) -> None:
        """Fetch a new JWT on the next call (a restarted api-server may sign with a new key)."""
        self._token = None

    def dag_ids(self) -> set[str]:
        return {dag["dag_id"] for dag in self._send("GET", "/api/v2/dags?limit=100")["dags"]}

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self._send("GET", "/api/v2/importErrors")["import_errors"])

    def unpause(self, dag_id: str) -> None:
        self._send("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any] | None = None) -> None:
        self._send(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        )

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of a DAG, oldest first."""
        return list(self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=id")["dag_runs"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The task instances of a run as Airflow returns them (state, try_number, start and end dates…)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100"
        return list(self._send("GET", path)["task_instances"])

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
        """``(task_id, map_index) -> state`` for every task instance of a run."""
        return {(ti["task_id"], ti["map_index"]): ti["state"] for ti in self.task_instances(dag_id, run_id)}

    # -- human-in-the-loop (CT_APPROVAL=required) -----------------------------------------------------
    def pending_approvals(self, dag_id: str = "~", run_id: str = "~") -> list[dict[str, Any]]:
        """Human-in-the-loop requests nobody has answered yet (subject, body, options, the task instance)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/hitlDetails?limit=100&response_received=false"
        return [d for d in self._send("GET", path)["hitl_details"] if not d.get("response_received")]

    def answer(self, dag_id: str, run_id: str, task_id: str, option: str, params: dict[str, Any] | None = None) -> Any:
        """Answer a human-in-the-loop request as this user (``option``: e.g. ``Approve`` or ``Reject``)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"
        return self._send("PATCH", path, {"chosen_options": [option], "params_input": params or {}})
