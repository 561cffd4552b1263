"""The whole local stack: the loopback services and Airflow with a real scheduler, and the waits on it.

:class:`LocalStack` starts what ``make demo`` runs: the services of :mod:`devtools.services` (S3
server, MLflow server, serving endpoint) and ``airflow standalone`` (scheduler, dag-processor,
triggerer, api-server; LocalExecutor on SQLite) configured from ``airflow_settings.yaml``, with the
DAGs unpaused. The demo's scenario, the end-to-end tests and the loop benchmark drive it through
the same public methods::

    with LocalStack(home=Path(".demo")) as stack:      # start() ... stop()
        stack.settle_unpause_ticks()
        run_id = stack.wait_for_listening_ingest_run()
        trainings = stack.run_ids("train_and_deploy")
        stack.s3.put_object(Bucket=stack.settings.s3_bucket, Key=..., Body=...)
        stack.wait_for_run("ingest_new_data", run_id)
        training = stack.wait_for_new_run("train_and_deploy", trainings, run_type="asset_triggered")
        stack.wait_for_run("train_and_deploy", training["dag_run_id"])
        stack.check_served(stack.champion_version())

Every wait raises :class:`StackError` on time-out, or as soon as ``airflow standalone`` exits,
naming what it waited for and the log to read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from devtools.airflow_api import AirflowAPI
from devtools.processes import kill_group, spawn_group, stop_groups
from devtools.services import (
    LocalServices,
    ServiceError,
    airflow_environment,
    free_port,
    http_ok,
    local_ct_settings,
    prepare_airflow_home,
    subprocess_env,
)

DAG_IDS = ("ingest_new_data", "train_and_deploy", "monitor_drift")
# What the tasks import that is slow to import (see the scheduler settings in LocalStack.start).
PRELOAD_MODULES = "airflow.sdk,pandas,pyarrow.parquet,boto3,mlflow,xgboost,sklearn.metrics,great_expectations,evidently"
T = TypeVar("T")


class StackError(RuntimeError):
    """Something the stack waited for did not happen; the message says what and where to look."""


@dataclass
class LocalStack:
    """The loopback services and ``airflow standalone`` in ``home`` (wiped at start). A context manager."""

    home: Path
    log: Callable[[str], None] = print
    started: float = field(default_factory=time.monotonic)
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api: AirflowAPI | None = None
    airflow_url: str = ""
    airflow_login: tuple[str, str] = ("", "")
    services: Any = None
    settings: Any = None
    s3: Any = None
    # The DAGs `start` unpauses (all by default); a test of one DAG leaves the others' scheduled ticks out.
    unpause: tuple[str, ...] = DAG_IDS
    # CT_* settings Airflow runs with on top of the local ones (`local_ct_settings`), e.g. the demo's
    # rollout; as there, a value already in this process's environment wins.
    ct_settings: Mapping[str, str] = field(default_factory=dict)

    # -- output --------------------------------------------------------------------------------
    def say(self, message: str) -> None:
        """Log one line, prefixed with the seconds since the stack was created."""
        self.log(f"[{time.monotonic() - self.started:6.0f}s] {message}")

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the services and Airflow, apply ``airflow_settings.yaml``, wait for the DAGs, unpause them."""
        from include.continuous_training.config import load_settings
        from include.continuous_training.storage import s3_client

        self.home = self.home.resolve()
        self._clean_slate()
        self.say(f"starting S3 server, MLflow server and serving endpoint (state in {self.home / 'services'})")
        self.services = LocalServices(state_dir=self.home / "services", settings=load_settings())
        self.services.start()
        for name, proc in self.services.processes.items():
            self.say(f"  {name:7s} {proc.url}")

        airflow_home = self.home / "airflow"
        airflow_home.mkdir(parents=True)
        port = 8080 if _port_free(8080) else free_port()
        self.airflow_url = f"http://127.0.0.1:{port}"
        self.env = subprocess_env(
            {
                **self.services.env(),
                **airflow_environment(airflow_home),
                # Latency over load, for a loop you watch: list landing/ every 2 s (production default
                # 60 s), as `make services-up` does too.
                **local_ct_settings(),
                **{key: os.environ.get(key) or value for key, value in self.ct_settings.items()},
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": self.airflow_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
                # And let an idle scheduler loop every 0.25 s (default 1 s): the hand-offs between tasks
                # are a large share of "batch lands -> champion serving" (`make bench`, loop rows).
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": os.environ.get(
                    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", "0.25"
                ),
                # LocalExecutor workers forked from a forkserver that imported the heavy libraries once:
                # each task process is then forked with them loaded instead of importing them itself,
                # which is most of a task's time at demo sizes (`make bench`, loop rows). A module that
                # is not installed is skipped.
                "AIRFLOW__SCHEDULER__MP_START_METHOD": os.environ.get(
                    "AIRFLOW__SCHEDULER__MP_START_METHOD", "forkserver"
                ),
                "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": os.environ.get(
                    "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD", PRELOAD_MODULES
                ),
            }
        )
        # This process reads S3 and MLflow (summaries, checks): the same environment as the tasks.
        os.environ.update(self.services.env())
        self.settings = load_settings(self.env)
        self.s3 = s3_client(self.settings)

        self.say("migrating the Airflow metadata DB and applying airflow_settings.yaml")
        try:
            applied = prepare_airflow_home(self.env)
        except ServiceError as error:
            raise StackError(str(error)) from None
        for line in applied:
            self.say(f"  {line}")
        self.say(f"starting Airflow (airflow standalone) on {self.airflow_url}")
        self.start_airflow()
        passwords = airflow_home / "simple_auth_manager_passwords.json.generated"
        self.wait_until(passwords.exists, 60, "the generated Airflow password")
        username, password = next(iter(json.loads(passwords.read_text()).items()))
        self.airflow_login = (username, password)
        self.api = AirflowAPI(self.airflow_url, username, password)
        api = self.api
        self.wait_until(lambda: set(DAG_IDS) <= api.dag_ids() or self._import_errors(), 300, "the DAGs to be parsed")
        for dag_id in self.unpause:
            api.unpause(dag_id)
        self.say(f"DAGs unpaused: {', '.join(self.unpause)}")

    def start_airflow(self) -> None:
        """``airflow standalone`` in its own process group, on this stack's home; waits for the API."""
        self.processes["airflow"] = spawn_group(
            [str(Path(sys.executable).parent / "airflow"), "standalone"],
            self.env,
            cwd=self.home,
            log_path=self.standalone_log,
        )
        (self.home / "airflow.pid").write_text(str(self.processes["airflow"].pid))
        self.wait_until(lambda: http_ok(f"{self.airflow_url}/api/v2/monitor/health"), 300, "the Airflow api-server")
        if self.api is not None:
            self.api.forget_token()  # a restarted api-server may sign with a new key

    def crash_airflow(self) -> None:
        """SIGKILL every process of ``airflow standalone`` at once (fault tests): no clean shutdown."""
        kill_group(self.processes.pop("airflow").pid, timeout=30)

    def stop(self) -> None:
        """Stop everything this stack started: Airflow first, then the services. Safe to call twice."""
        stop_groups([proc.pid for proc in self.processes.values()], grace=30)
        self.processes = {}
        (self.home / "airflow.pid").unlink(missing_ok=True)
        if self.services is not None:
            self.services.stop()
            self.services = None

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def standalone_log(self) -> Path:
        """What ``airflow standalone`` prints: the first place to look when a wait fails."""
        return self.home / "airflow-standalone.log"

    def _clean_slate(self) -> None:
        """Stop what a previous stack left running in this home, then start from an empty one."""
        pid_file = self.home / "airflow.pid"
        if pid_file.exists():
            stop_groups([int(pid_file.read_text())], grace=30)
        if (self.home / "services" / "state.json").exists():
            LocalServices(state_dir=self.home / "services").stop()
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)

    # -- waiting -------------------------------------------------------------------------------
    def wait_until(self, predicate: Callable[[], T | None], timeout: float, what: str, every: float = 2.0) -> T:
        """Call ``predicate`` every ``every`` s until it returns something truthy, and return that.

        Raises:
            StackError: ``timeout`` s passed, or ``airflow standalone`` exited, first; ``what`` names the wait.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if "airflow" in self.processes and self.processes["airflow"].poll() is not None:
                raise StackError(f"airflow standalone exited while waiting for {what}; see {self.standalone_log}")
            if time.monotonic() > deadline:
                raise StackError(f"timed out after {timeout:.0f}s waiting for {what}; see {self.standalone_log}")
            time.sleep(every)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        """Wait until a DAG run has finished (success or failed); return the run as the API shows it."""
        api = self._api()

        def finished() -> dict[str, Any] | None:
            run = api.run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        return self.wait_until(finished, timeout, f"{dag_id} run {run_id}")

    def wait_for_new_run(self, dag_id: str, seen: set[str], timeout: float = 300, **match: Any) -> dict[str, Any]:
        """Wait for a run of ``dag_id`` whose id is not in ``seen`` (and whose fields equal ``match``)."""
        api = self._api()

        def appeared() -> dict[str, Any] | None:
            for run in api.runs(dag_id):
                if run["dag_run_id"] not in seen and all(run.get(k) == v for k, v in match.items()):
                    return run
            return None

        return self.wait_until(appeared, timeout, f"a new {dag_id} run {match or ''}")

    def run_ids(self, dag_id: str) -> set[str]:
        """The ids of every run of ``dag_id`` so far (the ``seen`` of :meth:`wait_for_new_run`)."""
        return {run["dag_run_id"] for run in self._api().runs(dag_id)}

    def settle_unpause_ticks(self) -> None:
        """Unpausing starts each DAG's latest scheduled tick; let the two that finish on their own finish."""
        api = self._api()
        for dag_id in ("train_and_deploy", "monitor_drift"):

            def first_run(dag_id: str = dag_id) -> dict[str, Any] | None:
                return next(iter(api.runs(dag_id)), None)

            tick = self.wait_until(first_run, 180, f"the scheduled tick of {dag_id}")
            run = self.wait_for_run(dag_id, tick["dag_run_id"])
            what = {
                "train_and_deploy": "nothing curated yet, training skipped",
                "monitor_drift": "no champion and no traffic yet, nothing to decide",
            }[dag_id]
            self.say(f"  scheduled tick of {dag_id} ({run['dag_run_id']}): {run['state']} ({what})")

    def wait_for_listening_ingest_run(self) -> str:
        """The id of the ingest run whose ``wait_for_new_data`` sensor is deferred now, listing landing/.

        The active run (the hourly one) if there is one, else a run triggered here; returns once a
        run's sensor has deferred, so an object put in landing/ from now on is seen by that run or the
        next. Which run listens is read back, not assumed: a scheduled run that unpausing created just
        after the look for active runs goes first (``max_active_runs=1``) and the triggered one queues.
        """
        api = self._api()
        if not any(run["state"] in ("queued", "running") for run in api.runs("ingest_new_data")):
            api.trigger("ingest_new_data", f"demo_ingest_{datetime.now(UTC):%Y%m%dT%H%M%S}")

        def listening() -> str | None:
            for run in api.runs("ingest_new_data"):
                if run["state"] != "running":
                    continue
                if api.task_states("ingest_new_data", run["dag_run_id"]).get(("wait_for_new_data", -1)) == "deferred":
                    return str(run["dag_run_id"])
            return None

        return self.wait_until(listening, 180, "the wait_for_new_data sensor to defer")

    # -- the model -----------------------------------------------------------------------------
    def mlflow(self) -> Any:
        """An MLflow client of this stack's tracking server."""
        from include.continuous_training.registry import tracking_client

        return tracking_client(self.settings)

    def champion_version(self) -> str:
        """The registered version the ``champion`` alias points at; StackError when there is none."""
        from include.continuous_training.registry import version_by_alias

        version = version_by_alias(self.mlflow(), self.settings.model_name, "champion")
        if version is None:
            raise StackError("no champion after a promoting run")
        return str(version.version)

    def check_served(self, version: str) -> None:
        """Raise StackError unless the endpoint serves ``version``."""
        from include.continuous_training.deployment import LocalEndpoint

        url = self.services.processes["serving"].url
        served = LocalEndpoint(url, token=None).serving_version()
        if served != version:
            raise StackError(f"the endpoint serves {served}, the champion is v{version}")
        self.say(f"  the endpoint serves champion v{version} ({url})")

    # -- helpers -------------------------------------------------------------------------------
    def _api(self) -> AirflowAPI:
        if self.api is None:
            raise StackError("Airflow is not started: call start() first")
        return self.api

    def _import_errors(self) -> bool:
        errors = self._api().import_errors()
        if errors:
            raise StackError(f"the DAG files did not import: {errors}")
        return False


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
