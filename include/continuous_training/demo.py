"""``make demo``: the whole continuous-training loop on this machine, no cloud, no Docker.

    python -m include.continuous_training.demo [--exit] [--home .demo] [--keep-going]

Starts the loopback services (S3 server, MLflow server, serving endpoint) and Airflow with a real
scheduler (``airflow standalone``: scheduler, dag-processor, triggerer, api-server; LocalExecutor
on SQLite) configured from ``airflow_settings.yaml``, unpauses the DAGs, then drives the scenario
through Airflow's REST API, printing a line per step:

1. a first batch and a broken file land in S3 → the ``wait_for_new_data`` sensor fires →
   ``ingest_new_data`` curates the batch and quarantines the file → the curated-batches Asset starts
   ``train_and_deploy`` → the challenger passes the gates → champion v1 is deployed;
2. a traffic generator calls the endpoint: normal traffic, then drifted traffic;
3. ``monitor_drift`` is triggered for "today" → drift → it triggers ``train_and_deploy``; with no
   new labelled data the challenger cannot beat the champion, and the gate keeps v1 serving;
4. labelled data of the drifted period lands → ingest → retraining → the new champion is deployed
   and serves the traffic.

It ends with a summary (versions and their metrics, every decision record, quarantined objects,
report locations, URLs and the Airflow login), written to ``<home>/summary.json`` as well, and stays
up until Ctrl-C; ``--exit`` stops everything and exits 0 when the loop closed, 1 when it did not.
Each run starts from a clean ``<home>`` (default ``.demo/``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
DAG_IDS = ("ingest_new_data", "train_and_deploy", "monitor_drift")
FIRST_DAY = datetime(2026, 11, 1, tzinfo=UTC)
# What the tasks import that is slow to import (see the scheduler settings in Demo.start).
PRELOAD_MODULES = "airflow.sdk,pandas,pyarrow.parquet,boto3,mlflow,xgboost,sklearn.metrics,great_expectations,evidently"
T = TypeVar("T")


class DemoError(RuntimeError):
    """A step of the scenario did not happen; the message says which and where to look."""


class AirflowAPI:
    """The few calls of Airflow 3's REST API (``/api/v2``) the demo needs, with a JWT from ``/auth/token``."""

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
            raise DemoError(f"Airflow API {method} {path}: HTTP {error.code}: {detail}") from None
        return json.loads(payload) if payload else None

    def token(self) -> str:
        if self._token is None:
            self._token = self._send("POST", "/auth/token", self._credentials, auth=False)["access_token"]
        return self._token

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

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
        tis = self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
        return {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tis}


@dataclass
class Demo:
    home: Path
    log: Callable[[str], None] = print
    started: float = field(default_factory=time.monotonic)
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    api: AirflowAPI | None = None
    airflow_url: str = ""
    airflow_login: tuple[str, str] = ("", "")
    services: Any = None
    settings: Any = None
    s3: Any = None
    predicted: int = 0  # predictions answered so far: the inference log must catch up with them

    # -- output --------------------------------------------------------------------------------
    def say(self, message: str) -> None:
        self.log(f"[{time.monotonic() - self.started:6.0f}s] {message}")

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        from include.continuous_training.config import load_settings
        from include.continuous_training.services import LocalServices, free_port
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
        self.env = {
            **os.environ,
            **self.services.env(),
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": self.airflow_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            # Latency over load, for a loop you watch: list landing/ every 2 s (production default 60 s)
            # and let an idle scheduler loop every 0.25 s (default 1 s). `make bench` (loop rows): the
            # hand-off share of "batch lands -> champion serving" is 24.6 % with 5 s / 1 s, 13.1 % with these.
            "CT_SENSOR_POKE_SECONDS": os.environ.get("CT_SENSOR_POKE_SECONDS", "2"),
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": os.environ.get(
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", "0.25"
            ),
            # LocalExecutor workers forked from a forkserver that imported the heavy libraries once:
            # each task process is then forked with them loaded instead of importing them itself
            # (mlflow, xgboost, sklearn 3 s each here, GX 6 s). `make bench` (loop rows): tasks of
            # "batch lands -> champion serving" 39.9 s -> 11 s. A module that is not installed is skipped.
            "AIRFLOW__SCHEDULER__MP_START_METHOD": os.environ.get("AIRFLOW__SCHEDULER__MP_START_METHOD", "forkserver"),
            "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": os.environ.get(
                "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD", PRELOAD_MODULES
            ),
        }
        # This process reads S3 and MLflow for the summary: the same environment as the tasks.
        os.environ.update(self.services.env())
        self.settings = load_settings(self.env)
        self.s3 = s3_client(self.settings)

        self.say("migrating the Airflow metadata DB and applying airflow_settings.yaml")
        self._airflow("db", "migrate")
        for line in self._run_python("include.continuous_training.airflow_settings", "apply").splitlines():
            self.say(f"  {line}")
        self.say(f"starting Airflow (airflow standalone) on {self.airflow_url}")
        self.start_airflow()
        passwords = airflow_home / "simple_auth_manager_passwords.json.generated"
        self._wait(passwords.exists, 60, "the generated Airflow password")
        username, password = next(iter(json.loads(passwords.read_text()).items()))
        self.airflow_login = (username, password)
        self.api = AirflowAPI(self.airflow_url, username, password)
        api = self.api
        self._wait(lambda: set(DAG_IDS) <= api.dag_ids() or self._import_errors(), 300, "the DAGs to be parsed")
        for dag_id in DAG_IDS:
            api.unpause(dag_id)
        self.say(f"DAGs unpaused: {', '.join(DAG_IDS)}")

    def start_airflow(self) -> None:
        """``airflow standalone`` in its own process group, on this demo's home; waits for the API."""
        from include.continuous_training.services import http_ok

        log = (self.home / "airflow-standalone.log").open("ab")
        self.processes["airflow"] = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "standalone"],
            env=self.env,
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        (self.home / "airflow.pid").write_text(str(self.processes["airflow"].pid))
        self._wait(lambda: http_ok(f"{self.airflow_url}/api/v2/monitor/health"), 300, "the Airflow api-server")
        if self.api is not None:
            self.api._token = None  # a restarted api-server may sign with a new key

    def crash_airflow(self) -> None:
        """SIGKILL every process of ``airflow standalone`` at once (fault tests): no clean shutdown."""
        process = self.processes.pop("airflow")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.processes.values():
            _terminate_group(proc.pid)
        self.processes = {}
        (self.home / "airflow.pid").unlink(missing_ok=True)
        if self.services is not None:
            self.services.stop()
            self.services = None

    def _clean_slate(self) -> None:
        """Stop what a previous demo left running in this home, then start from an empty one."""
        from include.continuous_training.services import LocalServices

        pid_file = self.home / "airflow.pid"
        if pid_file.exists():
            _terminate_group(int(pid_file.read_text()))
        if (self.home / "services" / "state.json").exists():
            LocalServices(state_dir=self.home / "services").stop()
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)

    # -- helpers -------------------------------------------------------------------------------
    def _airflow(self, *args: str) -> str:
        return self._checked([str(Path(sys.executable).parent / "airflow"), *args])

    def _run_python(self, module: str, *args: str) -> str:
        return self._checked([sys.executable, "-m", module, *args])

    def _checked(self, argv: list[str]) -> str:
        result = subprocess.run(argv, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise DemoError(f"{' '.join(argv[-3:])} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result.stdout

    def _import_errors(self) -> bool:
        assert self.api is not None
        errors = self.api.import_errors()
        if errors:
            raise DemoError(f"the DAG files did not import: {errors}")
        return False

    def _wait(self, predicate: Callable[[], T | None], timeout: float, what: str, every: float = 2.0) -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if "airflow" in self.processes and self.processes["airflow"].poll() is not None:
                raise DemoError(f"airflow standalone exited while waiting for {what}; see {self._standalone_log()}")
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}; see {self._standalone_log()}")
            time.sleep(every)

    def _standalone_log(self) -> Path:
        return self.home / "airflow-standalone.log"

    def _wait_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        assert self.api is not None
        api = self.api

        def finished() -> dict[str, Any] | None:
            run = api.run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        return self._wait(finished, timeout, f"{dag_id} run {run_id}")

    def _new_run(self, dag_id: str, seen: set[str], timeout: float = 300, **match: Any) -> dict[str, Any]:
        """Wait for a run of ``dag_id`` not in ``seen`` (and matching ``match``), return it."""
        assert self.api is not None
        api = self.api

        def appeared() -> dict[str, Any] | None:
            for run in api.runs(dag_id):
                if run["dag_run_id"] not in seen and all(run.get(k) == v for k, v in match.items()):
                    return run
            return None

        return self._wait(appeared, timeout, f"a new {dag_id} run {match or ''}")

    def _run_ids(self, dag_id: str) -> set[str]:
        assert self.api is not None
        return {run["dag_run_id"] for run in self.api.runs(dag_id)}

    # -- the scenario --------------------------------------------------------------------------
    def scenario(self) -> dict[str, Any]:
        from include.continuous_training.datasets import BatchSpec, generate_batch, to_bytes

        assert self.api is not None
        self._settle_unpause_ticks()

        self.say("STEP 1: a first batch and a broken file land in s3://.../landing/")
        first = generate_batch(BatchSpec(rows=6000, seed=11, start=FIRST_DAY))
        broken = first.head(200).to_csv(index=False, sep=";").encode()  # a ';'-delimited export
        champion_before = self._train_after_ingest(
            {
                "2026-11-01/transactions.parquet": to_bytes(first, "parquet"),
                "2026-11-01/export-semicolon.csv": broken,
            },
            expect="PROMOTE",
        )
        self._check_served(champion_before)

        self.say("STEP 2: a traffic generator calls the endpoint")
        self._traffic("normal traffic", rows=600, seed=21, covariate_drift=0.0)
        self._traffic("drifted traffic (amounts up, more online and travel)", rows=1800, seed=22, covariate_drift=1.0)

        self.say("STEP 3: monitor_drift runs for today (no need to wait for 05:00 UTC)")
        triggered = self._monitor_drift()
        if triggered is not None:
            decision = self._await_training(triggered, expect="REJECT")
            self.say(f"  the gate kept v{champion_before} serving: {decision}")
        self._check_served(champion_before)

        self.say("STEP 4: labelled data of the drifted period lands")
        drifted = generate_batch(
            BatchSpec(rows=30000, seed=12, start=FIRST_DAY.replace(day=2), covariate_drift=1.0, concept_drift=1.0)
        )
        champion_after = self._train_after_ingest(
            {"2026-11-02/transactions.parquet": to_bytes(drifted, "parquet")}, expect="PROMOTE"
        )
        self._check_served(champion_after)
        report = self._traffic("traffic after the new champion", rows=300, seed=23, covariate_drift=1.0)
        closed = (
            int(champion_after) > int(champion_before)
            and set(report.versions) == {champion_after}
            and report.failed == 0
            and triggered is not None
        )
        return self.summary(closed)

    def _settle_unpause_ticks(self) -> None:
        """Unpausing starts each DAG's latest scheduled tick; let the two that finish on their own finish."""
        assert self.api is not None
        api = self.api
        for dag_id in ("train_and_deploy", "monitor_drift"):

            def first_run(dag_id: str = dag_id) -> dict[str, Any] | None:
                return next(iter(api.runs(dag_id)), None)

            tick = self._wait(first_run, 180, f"the scheduled tick of {dag_id}")
            run = self._wait_run(dag_id, tick["dag_run_id"])
            what = {
                "train_and_deploy": "nothing curated yet, training skipped",
                "monitor_drift": "no champion and no traffic yet, nothing to decide",
            }[dag_id]
            self.say(f"  scheduled tick of {dag_id} ({run['dag_run_id']}): {run['state']} ({what})")

    def _listening_ingest_run(self) -> str:
        """The ingest run whose sensor is waiting now (the hourly one, or one triggered for the demo)."""
        assert self.api is not None
        api = self.api
        active = [run for run in api.runs("ingest_new_data") if run["state"] in ("queued", "running")]
        if active:
            run_id = active[-1]["dag_run_id"]
        else:
            run_id = f"demo_ingest_{datetime.now(UTC):%Y%m%dT%H%M%S}"
            api.trigger("ingest_new_data", run_id)
        self._wait(
            lambda: api.task_states("ingest_new_data", run_id).get(("wait_for_new_data", -1)) == "deferred",
            180,
            "the wait_for_new_data sensor to defer",
        )
        return run_id

    def _train_after_ingest(self, files: Mapping[str, bytes], expect: str) -> str:
        """Land files while the sensor waits; ingest; wait for the Asset-triggered training; return the champion."""
        from include.continuous_training.ingestion import read_manifest

        assert self.api is not None
        api = self.api
        run_id = self._listening_ingest_run()
        self.say(f"  the wait_for_new_data sensor of ingest_new_data ({run_id}) is deferred, listing landing/")
        trainings_before = self._run_ids("train_and_deploy")
        keys = {self.settings.landing_prefix + name for name in files}
        for key, body in files.items():
            self.s3.put_object(Bucket=self.settings.s3_bucket, Key=self.settings.landing_prefix + key, Body=body)
            self.say(
                f"  landed s3://{self.settings.s3_bucket}/{self.settings.landing_prefix}{key} ({len(body):,} bytes)"
            )
        while True:
            run = self._wait_run("ingest_new_data", run_id, timeout=600)
            handled = {r.source.key: r for r in read_manifest(self.s3, self.settings) if r.source.key in keys}
            mapped = {k: s for k, s in api.task_states("ingest_new_data", run_id).items() if k[0] == "ingest_batch"}
            self.say(f"  ingest_new_data {run_id}: {run['state']}; ingest_batch: {sorted(mapped.values(), key=str)}")
            if len(handled) == len(keys):
                break
            run_id = self._listening_ingest_run()  # a file listed after the sensor fired: the next run takes it
        for key, result in sorted(handled.items()):
            if result.status == "quarantined":
                self.say(f"  QUARANTINED {key}: {result.reason[:200]}")
                self.say(f"    report: {result.report_uri}")
            else:
                self.say(f"  curated {key}: {result.good_rows} rows ({result.bad_rows} bad) -> {result.curated_uri}")
        training = self._new_run("train_and_deploy", trainings_before, run_type="asset_triggered")
        self.say(f"  the curated_batches Asset started train_and_deploy ({training['dag_run_id']})")
        decision = self._await_training(training["dag_run_id"], expect=expect)
        self.say(f"  {decision}")
        return self._champion()

    def _await_training(self, run_id: str, expect: str) -> str:
        assert self.api is not None
        run = self._wait_run("train_and_deploy", run_id)
        states = self.api.task_states("train_and_deploy", run_id)
        done = [task for (task, _), state in states.items() if state == "success"]
        self.say(f"  train_and_deploy {run_id}: {run['state']}; succeeded: {', '.join(sorted(done))}")
        if run["state"] != "success":
            failed = sorted(task for (task, _), state in states.items() if state == "failed")
            raise DemoError(
                f"train_and_deploy {run_id} {run['state']} (failed: {failed}); task logs under {self.home}/airflow/logs"
            )
        decision = self._decision_of(run_id)
        if not decision.startswith(expect):
            raise DemoError(f"train_and_deploy {run_id} decided {decision!r}, the scenario expects {expect}")
        return decision

    def _decision_of(self, dag_run_id: str) -> str:
        client = self._mlflow()
        experiment = client.get_experiment_by_name(self.settings.mlflow_experiment)
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`ct.dag_run_id` = '{dag_run_id}'", max_results=1
        )
        if not runs:
            raise DemoError(f"no MLflow run recorded for train_and_deploy {dag_run_id}")
        return str(runs[0].data.tags.get("ct.decision_summary", runs[0].data.tags.get("ct.decision", "?")))

    def _mlflow(self) -> Any:
        from include.continuous_training.registry import tracking_client

        return tracking_client(self.settings)

    def _champion(self) -> str:
        from include.continuous_training.registry import version_by_alias

        version = version_by_alias(self._mlflow(), self.settings.model_name, "champion")
        if version is None:
            raise DemoError("no champion after a promoting run")
        return str(version.version)

    def _check_served(self, version: str) -> None:
        from include.continuous_training.deployment import http_json

        status, metadata = http_json("GET", self.services.processes["serving"].url + "/metadata")
        served = str(metadata.get("model_version")) if status == 200 else None
        if served != version:
            raise DemoError(f"the endpoint serves {served}, the champion is v{version}")
        self.say(f"  the endpoint serves champion v{version} ({self.services.processes['serving'].url})")

    def _traffic(self, what: str, rows: int, seed: int, covariate_drift: float) -> Any:
        from include.continuous_training.traffic import generated_records, send

        url = self.services.processes["serving"].url
        records = generated_records(rows, seed, covariate_drift, self.settings.feature_columns)
        report = send(url, records, rows_per_request=1, concurrency=4)
        self.say(f"  {what}: {report.summary()}")
        if report.failed:
            raise DemoError(f"{report.failed} requests failed: {dict(report.statuses)}")
        self.predicted += len(report.prediction_ids)
        self._wait(lambda: self._logged_rows() >= self.predicted, 60, "the inference log to be flushed to S3")
        return report

    def _logged_rows(self) -> int:
        from include.continuous_training.storage import list_objects, read_parquet_object

        total = 0
        for ref in list_objects(self.s3, self.settings.s3_bucket, self.settings.inference_prefix):
            total += len(read_parquet_object(self.s3, self.settings.s3_bucket, ref.key)[0])
        return total

    def _monitor_drift(self) -> str | None:
        assert self.api is not None
        run_id = f"demo_drift_{datetime.now(UTC):%Y%m%dT%H%M%S}"
        trainings_before = self._run_ids("train_and_deploy")
        self.api.trigger("monitor_drift", run_id)
        run = self._wait_run("monitor_drift", run_id, timeout=600)
        if run["state"] != "success":
            raise DemoError(f"monitor_drift {run_id} {run['state']}; task logs under {self.home}/airflow/logs")
        decision = self._drift_decisions()[-1]
        self.say(f"  monitor_drift {run_id}: {decision['action'].upper()}: {'; '.join(decision['reasons'])}")
        states = self.api.task_states("monitor_drift", run_id)
        if states.get(("trigger_retraining", -1)) != "success":
            return None
        training = self._new_run("train_and_deploy", trainings_before)
        self.say(f"  monitor_drift triggered train_and_deploy ({training['dag_run_id']}), reason in its conf")
        return str(training["dag_run_id"])

    def _drift_decisions(self) -> list[dict[str, Any]]:
        from include.continuous_training.storage import get_json, list_objects

        prefix = f"{self.settings.reports_prefix}drift/"
        keys = sorted(
            r.key for r in list_objects(self.s3, self.settings.s3_bucket, prefix) if r.key.endswith("decision.json")
        )
        return [dict(get_json(self.s3, self.settings.s3_bucket, key) or {}, key=key) for key in keys]

    # -- summary ---------------------------------------------------------------------------------
    def summary(self, closed: bool) -> dict[str, Any]:
        from include.continuous_training.ingestion import read_manifest
        from include.continuous_training.storage import list_objects

        client = self._mlflow()
        name = self.settings.model_name
        aliases: dict[str, list[str]] = {}
        for alias, version in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        experiment = client.get_experiment_by_name(self.settings.mlflow_experiment)
        runs = client.search_runs(
            [experiment.experiment_id], filter_string="tags.`ct.decision` != ''", order_by=["start_time ASC"]
        )
        versions_by_run = {v.run_id: str(v.version) for v in client.search_model_versions(f"name = '{name}'")}
        trainings = []
        ui = self.settings.mlflow_tracking_uri
        for run in runs:
            tags, metrics = run.data.tags, run.data.metrics
            trainings.append(
                {
                    "dag_run_id": tags.get("ct.dag_run_id"),
                    "reason": tags.get("ct.reason"),
                    "decision": tags.get("ct.decision"),
                    "decision_record": tags.get("ct.decision_summary"),
                    "holdout_roc_auc": metrics.get("holdout_roc_auc"),
                    "champion_holdout_roc_auc": metrics.get("champion_holdout_roc_auc"),
                    "registered_version": versions_by_run.get(run.info.run_id),
                    "aliases": aliases.get(versions_by_run.get(run.info.run_id, ""), []),
                    "mlflow_run": f"{ui}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}",
                }
            )
        quarantined = [
            {"key": r.source.key, "reason": r.reason, "report": r.report_uri}
            for r in read_manifest(self.s3, self.settings)
            if r.status == "quarantined"
        ]
        drift = [
            {
                "window": d["key"].split("/")[-2],
                "action": d.get("action"),
                "reasons": d.get("reasons"),
                "report": f"s3://{self.settings.s3_bucket}/{d['key'].rsplit('/', 1)[0]}/report.html",
            }
            for d in self._drift_decisions()
        ]
        reports = sorted(
            f"s3://{self.settings.s3_bucket}/{r.key}"
            for r in list_objects(self.s3, self.settings.s3_bucket, self.settings.reports_prefix)
            if r.key.endswith(".html")
        )
        serving = self.services.processes["serving"].url
        username, password = self.airflow_login
        return {
            "loop_closed": closed,
            "wall_seconds": round(time.monotonic() - self.started, 1),
            "model_name": name,
            "champion": next((v for v, a in aliases.items() if "champion" in a), None),
            "trainings": trainings,
            "quarantined": quarantined,
            "drift": drift,
            "reports": reports,
            "urls": {
                "airflow": self.airflow_url,
                "airflow_login": f"{username} / {password}",
                "mlflow": self.settings.mlflow_tracking_uri,
                "endpoint_docs": f"{serving}/docs",
                "endpoint_metrics": f"{serving}/metrics",
                "s3": self.services.processes["s3"].url,
            },
        }


def render(summary: dict[str, Any]) -> str:
    lines = [
        "",
        "=" * 100,
        f"SUMMARY  loop closed: {summary['loop_closed']}   wall time: {summary['wall_seconds']:.0f} s",
        "",
    ]
    lines.append("Trainings (oldest first):")
    for t in summary["trainings"]:
        auc = t["holdout_roc_auc"]
        champion_auc = t["champion_holdout_roc_auc"]
        version = f"v{t['registered_version']}" if t["registered_version"] else "not registered"
        lines.append(
            f"  {t['dag_run_id']}: {t['decision']}  -> {version} {t['aliases'] or ''}  holdout ROC AUC "
            f"{auc:.4f}" + (f" (champion {champion_auc:.4f})" if champion_auc is not None else "")
        )
        lines.append(f"    reason: {t['reason']}")
        lines.append(f"    record: {t['decision_record']}")
        lines.append(f"    MLflow: {t['mlflow_run']}")
    lines.append("Quarantined objects:")
    for q in summary["quarantined"]:
        lines.append(f"  {q['key']}: {q['reason'][:160]}")
        lines.append(f"    report: {q['report']}")
    lines.append("Drift decisions:")
    for d in summary["drift"]:
        lines.append(f"  {d['window']}: {d['action']}: {'; '.join(d['reasons'] or [])[:300]}")
    lines.append("Reports:")
    lines += [f"  {uri}" for uri in summary["reports"]]
    lines.append("URLs:")
    lines += [f"  {name:17s} {url}" for name, url in summary["urls"].items()]
    lines.append("=" * 100)
    return "\n".join(lines)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _terminate_group(pid: int) -> None:
    """SIGTERM a process group, SIGKILL it after 30 s, reap the leader if it is our child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            os.killpg(pid, 0)  # raises ProcessLookupError once the whole group is gone
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.continuous_training.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--exit", action="store_true", help="stop everything after the summary; exit 0 if the loop closed"
    )
    parser.add_argument("--home", type=Path, default=ROOT / ".demo", help="working directory (wiped at start)")
    args = parser.parse_args(argv)

    demo = Demo(home=args.home, log=lambda line: print(line, flush=True))
    stop_requested = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop_requested
        if stop_requested:  # a second Ctrl-C while stopping: let the clean-up finish
            return
        stop_requested = True
        raise KeyboardInterrupt

    # Both, explicitly: a process started in the background inherits SIGINT as ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        demo.start()
        summary = demo.scenario()
        (demo.home / "summary.json").write_text(json.dumps(summary, indent=2))
        print(render(summary), flush=True)
        print(f"summary written to {demo.home / 'summary.json'}", flush=True)
        if args.exit:
            return 0 if summary["loop_closed"] else 1
        print("Everything stays up: open the URLs above. Ctrl-C stops it all.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping…", flush=True)
        return 0
    except DemoError as error:
        print(f"DEMO FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        demo.stop()
        if stop_requested:
            print("stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
