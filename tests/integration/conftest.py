"""Helpers for integration tests: put objects in the real S3 server, run DAGs with ``dag.test()``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.services import ServiceProcess


@dataclass
class DagRunOutcome:
    state: str
    task_states: dict[tuple[str, int], str]  # (task_id, map_index) -> state
    rendered_map_index: dict[tuple[str, int], str | None]
    run_id: str
    tries: dict[tuple[str, int], int] = field(default_factory=dict)  # (task_id, map_index) -> tries made

    def states_of(self, task_id: str) -> dict[int, str]:
        return {index: state for (tid, index), state in self.task_states.items() if tid == task_id}


def run_dag(
    dagbag: Any, dag_id: str, run_conf: dict[str, Any] | None = None, logical_date: datetime | None = None
) -> DagRunOutcome:
    """Run one DAG run in-process against the real services and read back what the DB recorded.

    The same ``logical_date`` twice re-runs the same DAG run (Airflow clears and reuses it).
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = dagbag.dags[dag_id]
    when = {"logical_date": logical_date, "run_after": logical_date} if logical_date else {}
    dag_run = dag.test(run_conf=run_conf, **when)
    with create_session() as session:
        instances = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == dag_run.run_id)
        ).all()
        states = {(ti.task_id, ti.map_index): str(ti.state) for ti in instances}
        names = {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in instances}
        tries = {(ti.task_id, ti.map_index): int(ti.try_number) for ti in instances}
    return DagRunOutcome(str(dag_run.state), states, names, dag_run.run_id, tries)


def asset_events(asset_name: str) -> list[dict[str, Any]]:
    """Every event recorded for an Asset, oldest first, with its ``extra``."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == asset_name)
        ).all()
        return [dict(row.extra or {}) for row in sorted(rows, key=lambda r: r.id)]


def land_and_curate(s3: Any, settings: Any, batches: dict[str, Any]) -> None:
    """Drop batches in landing/ and take them in with the ingest library (what ingest_new_data does)."""
    from devtools.datasets import to_bytes
    from include.continuous_training.ingestion import find_new_objects, ingest_object

    for name, frame in batches.items():
        s3.put_object(Bucket=settings.s3_bucket, Key=settings.landing_prefix + name, Body=to_bytes(frame, "parquet"))
    for ref in find_new_objects(s3, settings):
        ingest_object(s3, settings, ref, run_id="test-ingest")


class Webhook:
    """A real HTTP server on loopback that records what alerts post to it."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        return [str(body.get("text", "")) for body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Endpoint:
    """A client of a real serving endpoint, and the endpoint itself when :meth:`start` started it."""

    def __init__(self, service: ServiceProcess, token: str | None = None) -> None:
        self.service = service
        self.pid = service.pid
        self.port = service.port
        self.url = service.url
        self.token = token

    @classmethod
    def start(cls, state_dir: Path, env: dict[str, str], workers: int = 2, port: int | None = None) -> Endpoint:
        """The endpoint in its own process group, for one test's model (``CT_MODEL_NAME`` / ``CT_MODEL`` in ``env``)."""
        from devtools.services import start_endpoint

        service = start_endpoint(env, state_dir, workers=workers, port=port, startup_timeout=60)
        return cls(service, env["CT_SERVING_ADMIN_TOKEN"])

    def get(self, path: str) -> tuple[int, Any]:
        from include.continuous_training.deployment import http_json

        return http_json("GET", self.url + path)

    def post(self, path: str, body: Any = None, token: str | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        import json
        import urllib.error
        import urllib.request

        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read() or b"null")

    def post_bytes(self, path: str, body: Any) -> tuple[int, bytes]:
        """POST JSON; the status and the response body exactly as it came (bytes)."""
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def served_version(self) -> str | None:
        status, payload = self.get("/ready")
        return str(payload["model_version"]) if status == 200 else None

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; nothing of the endpoint is left running."""
        from devtools.processes import stop_groups

        stop_groups([self.pid], grace=15)

    def kill(self) -> None:
        """SIGKILL the endpoint and its workers at once: a crash, not a shutdown."""
        from devtools.processes import kill_group

        kill_group(self.pid)


def keys_under(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


class CuttableProxy:
    """A TCP proxy on loopback in front of a real server, for fault tests: it forwards bytes until it
    has seen ``cut_after`` HTTP requests, then drops every connection and refuses new ones until
    :meth:`restore` (an S3 outage in the middle of a task, at a chosen request)."""

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.requests = 0
        self.cut_after: int | None = None
        self.cut = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.cut:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: Any, target: Any, counting: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if counting:
                    with self._lock:
                        self.requests += data.count(b" HTTP/1.1\r\n")
                        if self.cut_after is not None and self.requests > self.cut_after:
                            self.cut = True
                    if self.cut:
                        self.drop_all()
                        return
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.close()

    def drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def cut_at(self, request: int | None) -> None:
        """Let ``request`` more requests through, then cut (None: never)."""
        with self._lock:
            self.requests = 0
            self.cut_after = request
            self.cut = False

    def restore(self) -> None:
        self.cut_at(None)

    def close(self) -> None:
        self.drop_all()
        self._server.close()


def register_copy_of_version(settings: Any, s3: Any, version: str, name: str, change: Any) -> str:
    """A new version of ``settings.model_name`` whose artifacts are a copy of ``version``'s, passed through
    ``change(files: dict[relative path, bytes]) -> dict``; registered without alias. Its version."""
    import uuid
    from urllib.parse import urlparse

    from include.continuous_training.registry import tracking_client

    client = tracking_client(settings)
    source = client.get_model_version(settings.model_name, version)
    model_id = source.model_id or str(source.source).removeprefix("models:/")  # registered from models:/<model id>
    # The tracking server proxies artifacts (mlflow-artifacts:/<path>) into s3://<bucket>/mlflow/<path>.
    location = client.get_logged_model(model_id).artifact_location
    assert location.startswith("mlflow-artifacts:"), location
    path = urlparse(location).path.strip("/")
    bucket, prefix = settings.s3_bucket, f"mlflow/{path}"
    files = {}
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", []):
        files[item["Key"].removeprefix(prefix + "/")] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    assert "model.ubj" in files, sorted(files)
    # MLflow registers a source only from inside the run's artifacts: the copy goes there.
    run_artifacts = urlparse(client.get_run(str(source.run_id)).info.artifact_uri).path.strip("/")
    copy = f"{run_artifacts}/tampered-{name}-{uuid.uuid4().hex[:8]}"
    for relative, body in change(files).items():
        s3.put_object(Bucket=bucket, Key=f"mlflow/{copy}/{relative}", Body=body)
    created = client.create_model_version(settings.model_name, f"mlflow-artifacts:/{copy}", run_id=source.run_id)
    return str(created.version)
