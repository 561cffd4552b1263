"""Real local services on loopback: an S3-compatible server and an MLflow tracking server.

The same launcher serves developers (``python -m devtools.services up``), the pytest fixtures, the
benchmarks and the demo, so tests talk to real servers over real sockets.

- ``moto_server`` on a free 127.0.0.1 port, with the project bucket created.
- ``mlflow server`` on a free 127.0.0.1 port: SQLite backend store in the state directory, artifacts
  proxied into ``s3://<bucket>/mlflow`` on the S3 server (never on local disk).
- the serving endpoint (``python -m include.continuous_training.serving``) on a free 127.0.0.1 port,
  with a random admin token generated for this stack (in ``env.sh`` and ``state.json``, mode 0600).
  :func:`start_endpoint` is the one place an endpoint process is started: this stack's, and the
  ones tests and benchmarks start for a model of their own.

``up`` (the command line; ``make services-up``) also prepares an Airflow home in
``<state-dir>/airflow`` for ``airflow dags test``: the metadata DB migrated, ``airflow_settings.yaml``
applied (:func:`prepare_airflow_home`, what ``make demo`` does too). It writes ``<state-dir>/state.json``
(pids, ports) and ``<state-dir>/env.sh``: the environment that points this project, MLflow clients,
Airflow (home, DAGs, plugins, the ``aws_ct`` connection) and the shell (the venv first on ``PATH``, the
project on ``PYTHONPATH``) at them. ``down`` stops every process group it started and leaves none
behind. The S3 server keeps its objects in memory: they go with it, so an ``up`` that starts the
services afresh also starts MLflow's registry, the endpoint's state and Airflow's metadata DB afresh
(they would describe objects that are gone).

The S3 credentials are moto's placeholders (``test``/``test``), not secrets.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from devtools.processes import kill_group, spawn_group, stop_groups
from include.continuous_training.config import Settings, load_settings

LOOPBACK = "127.0.0.1"
PLACEHOLDER_KEY = "test"  # moto accepts any credentials; these are not secrets
REGION = "us-east-1"
DEFAULT_STATE_DIR = Path(".services")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STARTUP_TIMEOUT = 90.0
# What the local stack changes from the production defaults, for a loop you watch: list landing/ every
# 2 s (default 60 s). A value already in the environment wins.
LOCAL_CT_SETTINGS = {"CT_SENSOR_POKE_SECONDS": "2"}


class ServiceError(RuntimeError):
    """A local service failed to start or to answer its health check."""


def free_port() -> int:
    """Ask the kernel for a free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  # nosec B310
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError):
        return False


def venv_bin(name: str) -> str:
    """A console script from the interpreter's own environment (the venv), falling back to PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra``, with the venv's scripts first on PATH and the
    project root on PYTHONPATH: what every process the local stack starts runs with."""
    env = {**os.environ, **(extra or {})}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def local_ct_settings() -> dict[str, str]:
    """:data:`LOCAL_CT_SETTINGS`, each overridden by the same variable in this process's environment."""
    return {key: os.environ.get(key, default) for key, default in LOCAL_CT_SETTINGS.items()}


def airflow_environment(airflow_home: Path) -> dict[str, str]:
    """The settings that point Airflow at this project: its home, the DAGs and plugins, no example DAGs."""
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def prepare_airflow_home(env: Mapping[str, str], timeout: float = 600) -> list[str]:
    """Migrate the metadata DB of ``env["AIRFLOW_HOME"]`` and apply ``airflow_settings.yaml`` to it.

    Both steps are idempotent: a migrated DB stays as it is, a pool or connection already there is
    updated only where it differs (:mod:`include.continuous_training.airflow_settings`).

    Args:
        env: the complete environment of both commands (:func:`subprocess_env` plus
            :func:`airflow_environment`).
        timeout: seconds each command may take.

    Returns:
        What applying the settings file changed, one line per connection, pool and variable.

    Raises:
        ServiceError: a command failed or timed out; the message names it and ends with its output.
    """
    steps = (
        [venv_bin("airflow"), "db", "migrate"],
        [sys.executable, "-m", "include.continuous_training.airflow_settings", "apply"],
    )
    output = ""
    for argv in steps:
        command = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))
        try:
            result = subprocess.run(
                argv, env=dict(env), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise ServiceError(
                f"`{command}` (AIRFLOW_HOME={env.get('AIRFLOW_HOME')}) took over {timeout:.0f}s"
            ) from None
        if result.returncode != 0:
            raise ServiceError(
                f"`{command}` (AIRFLOW_HOME={env.get('AIRFLOW_HOME')}) failed with {result.returncode}:\n"
                + (result.stdout + result.stderr)[-3000:]
            )
        output = result.stdout
    return output.splitlines()


@dataclass
class ServiceProcess:
    """One started server: the leader of its process group, where it listens and where it logs."""

    name: str
    pid: int
    port: int
    url: str
    health_url: str
    log_path: str


def _spawn(
    name: str,
    argv: list[str],
    port: int,
    health_path: str,
    env: Mapping[str, str],
    log_path: Path,
    startup_timeout: float,
) -> ServiceProcess:
    """Start one server in its own process group (so stopping it stops its workers too); wait for health."""
    process = spawn_group(argv, env, cwd=log_path.parent, log_path=log_path)
    url = f"http://{LOOPBACK}:{port}"
    proc = ServiceProcess(name, process.pid, port, url, url + health_path, str(log_path))
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServiceError(f"{name} exited with {process.returncode} during start-up; log tail:\n{tail}")
        if http_ok(proc.health_url):
            return proc
        time.sleep(0.25)
    kill_group(process.pid)
    raise ServiceError(f"{name} did not become healthy on {proc.health_url} in {startup_timeout:.0f}s")


def _on_port(spawn: Callable[[int], ServiceProcess], port: int | None) -> ServiceProcess:
    """Spawn on ``port``, or on a free one; then pick another if something took it before the server bound it."""
    if port is not None:
        return spawn(port)
    for attempt in range(3):
        try:
            return spawn(free_port())
        except ServiceError as error:
            if "in use" not in str(error) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def start_endpoint(
    env: Mapping[str, str],
    state_dir: Path,
    *,
    workers: int = 2,
    port: int | None = None,
    log_path: Path | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
) -> ServiceProcess:
    """Start the serving endpoint (``python -m include.continuous_training.serving``) on loopback.

    Args:
        env: its settings on top of this process's environment: the S3 and MLflow it reads
            (``CT_S3_ENDPOINT_URL``, ``MLFLOW_TRACKING_URI``…), ``CT_MODEL_NAME``, ``CT_SERVING_ADMIN_TOKEN``.
        state_dir: its ``CT_SERVING_STATE_DIR`` (worker heartbeats and metrics of this replica);
            what it serves comes from the model's desired deployment in S3, whichever folder it gets.
        workers: uvicorn worker processes.
        port: where to listen; a free port when None.
        log_path: where its output goes (appended); ``<state_dir's parent>/serving.log`` when None.
        startup_timeout: seconds to wait for ``/health``.

    Returns:
        The running endpoint, leader of its own process group: stop it with
        :func:`devtools.processes.stop_groups` (or :meth:`LocalServices.stop` for the stack's own).

    Raises:
        ServiceError: it exited, or did not answer ``/health`` in time (then it is killed).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    log = log_path or state_dir.parent / "serving.log"

    def spawn(port: int) -> ServiceProcess:
        argv = [sys.executable, "-m", "include.continuous_training.serving", "--port", str(port)]
        own = {"CT_SERVING_URL": f"http://{LOOPBACK}:{port}", "CT_SERVING_STATE_DIR": str(state_dir)}
        env_for_port = subprocess_env({**env, **own})
        return _spawn(
            "serving", [*argv, "--workers", str(workers)], port, "/health", env_for_port, log, startup_timeout
        )

    return _on_port(spawn, port)


@dataclass
class LocalServices:
    """Start, health-check and stop the loopback services. Usable as a context manager."""

    state_dir: Path = DEFAULT_STATE_DIR
    settings: Settings = field(default_factory=load_settings)
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    with_endpoint: bool = True
    # An Airflow home to prepare (migrated, airflow_settings.yaml applied) and point env() at; None: none.
    airflow_home: Path | None = None
    airflow_settings_applied: list[str] = field(default_factory=list)  # what preparing it changed
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    # A fresh random admin token per stack; never a default, never committed.
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env.sh"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalServices:
        """Start every service (or adopt the ones a previous ``start`` left healthy in this state dir).

        Started afresh, the S3 server is empty: the MLflow DB, the endpoint's state and the Airflow
        metadata DB a previous start left in this state dir are removed first. With ``airflow_home``,
        the Airflow home is then prepared (:func:`prepare_airflow_home`), adopted services or not.
        """
        self.state_dir = self.state_dir.resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.airflow_home is not None:
            self.airflow_home = self.airflow_home.resolve()
        if self.state_file.exists():
            existing = self.load_state()
            if all(http_ok(p.health_url) for p in existing.values()):
                self.processes = existing
                self._prepare_airflow()
                self._write_env_file()
                return self
            self.processes = existing
            self.stop()
        self._forget_previous_bucket()
        try:
            s3 = self._start_s3()
            self.processes["s3"] = s3
            self._save_state()
            self._create_bucket(s3.url)
            self.processes["mlflow"] = self._start_mlflow(s3.url)
            self._save_state()
            if self.with_endpoint:
                self.processes["serving"] = self._start_serving()
                self._save_state()
            self._prepare_airflow()
        except BaseException:
            self.stop()
            raise
        self._write_env_file()
        return self

    def _forget_previous_bucket(self) -> None:
        """Remove what describes the objects of a previous (in-memory, so gone) S3 server."""
        (self.state_dir / "mlflow.db").unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "serving", ignore_errors=True)
        if self.airflow_home is not None:
            (self.airflow_home / "airflow.db").unlink(missing_ok=True)

    def _prepare_airflow(self) -> None:
        if self.airflow_home is not None:
            self.airflow_home.mkdir(parents=True, exist_ok=True)
            self.airflow_settings_applied = prepare_airflow_home(subprocess_env(self.env()))

    def _write_env_file(self) -> None:
        """``env.sh``: :meth:`env` exported, then the venv first on PATH and the project first on PYTHONPATH."""
        lines = [f"export {key}={shlex.quote(value)}\n" for key, value in self.env().items()]
        root, scripts = shlex.quote(str(PROJECT_ROOT)), shlex.quote(str(Path(sys.executable).parent))
        lines.append(f'export PYTHONPATH={root}"${{PYTHONPATH:+:$PYTHONPATH}}"\n')
        lines.append(f'export PATH={scripts}:"$PATH"\n')
        self.env_file.write_text("".join(lines))
        self.env_file.chmod(0o600)  # holds the endpoint's admin token

    def stop(self) -> None:
        """Terminate every started process group; SIGKILL what ignores SIGTERM for 10 s."""
        procs = self.processes or (self.load_state() if self.state_file.exists() else {})
        stop_groups([proc.pid for proc in procs.values()], grace=10)
        self.processes = {}
        self.state_file.unlink(missing_ok=True)
        self.env_file.unlink(missing_ok=True)

    def __enter__(self) -> LocalServices:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state -------------------------------------------------------------------------------
    def load_state(self) -> dict[str, ServiceProcess]:
        """The services recorded in ``state.json`` (by ``up``, possibly in another process)."""
        raw = json.loads(self.state_file.read_text())
        self.admin_token = raw.get("token") or self.admin_token
        if raw.get("airflow_home"):
            self.airflow_home = Path(raw["airflow_home"])
        return {name: ServiceProcess(**value) for name, value in raw["processes"].items()}

    def _save_state(self) -> None:
        payload = {
            "processes": {name: vars(proc) for name, proc in self.processes.items()},
            "token": self.admin_token,
            "airflow_home": str(self.airflow_home) if self.airflow_home else None,
        }
        self.state_file.write_text(json.dumps(payload, indent=2))
        self.state_file.chmod(0o600)  # holds the endpoint's admin token

    def status(self) -> dict[str, bool]:
        """Whether each service answers its health check now."""
        procs = self.processes or (self.load_state() if self.state_file.exists() else {})
        return {name: http_ok(proc.health_url) for name, proc in procs.items()}

    def env(self) -> dict[str, str]:
        """Environment that points this project, MLflow and Airflow at the running services."""
        s3_url = self.processes["s3"].url
        connection = {
            "conn_type": "aws",
            "login": PLACEHOLDER_KEY,
            "password": PLACEHOLDER_KEY,
            "extra": {"endpoint_url": s3_url, "region_name": REGION},
        }
        env = {
            "CT_S3_BUCKET": self.settings.s3_bucket,
            "CT_S3_ENDPOINT_URL": s3_url,
            "AWS_ACCESS_KEY_ID": PLACEHOLDER_KEY,
            "AWS_SECRET_ACCESS_KEY": PLACEHOLDER_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "MLFLOW_S3_ENDPOINT_URL": s3_url,
            f"AIRFLOW_CONN_{self.settings.aws_conn_id.upper()}": json.dumps(connection),
        }
        if "mlflow" in self.processes:
            env["MLFLOW_TRACKING_URI"] = self.processes["mlflow"].url
        if "serving" in self.processes:
            env["CT_SERVING_URL"] = self.processes["serving"].url
            env["CT_SERVING_ADMIN_TOKEN"] = self.admin_token
            env["CT_SERVING_STATE_DIR"] = str(self.state_dir / "serving")
        if self.airflow_home is not None:
            env.update(airflow_environment(self.airflow_home))
            env.update(local_ct_settings())
        return env

    # -- individual services -----------------------------------------------------------------
    def restart(self, name: str) -> ServiceProcess:
        """Stop one service and start it again on the same port with the same state (fault tests).

        Only ``mlflow`` (its SQLite backend and the S3 artifacts survive) and ``serving``; the S3
        server keeps its objects in memory, so a restart would lose them.
        """
        if name not in ("mlflow", "serving"):
            raise ValueError(f"cannot restart {name!r} without losing its state")
        self.stop_service(name)
        port = self.processes[name].port if name in self.processes else free_port()
        if name == "mlflow":
            proc = self._start_mlflow(self.processes["s3"].url, port=port)
        else:
            proc = self._start_serving(port=port)
        self.processes[name] = proc
        self._save_state()
        return proc

    def stop_service(self, name: str) -> None:
        """SIGKILL one service's process group (a crash, not a shutdown); keep its entry for restart."""
        kill_group(self.processes[name].pid)

    def _start_s3(self) -> ServiceProcess:
        def spawn(port: int) -> ServiceProcess:
            argv = [venv_bin("moto_server"), "-H", LOOPBACK, "-p", str(port)]
            return _spawn(
                "s3", argv, port, "/moto-api/", subprocess_env(), self.state_dir / "s3.log", self.startup_timeout
            )

        return _on_port(spawn, None)

    def _create_bucket(self, s3_url: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=s3_url,
            aws_access_key_id=PLACEHOLDER_KEY,
            aws_secret_access_key=PLACEHOLDER_KEY,
            region_name=REGION,
        )
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if self.settings.s3_bucket not in existing:
            client.create_bucket(Bucket=self.settings.s3_bucket)

    def _start_mlflow(self, s3_url: str, port: int | None = None) -> ServiceProcess:
        env = subprocess_env(
            {
                "MLFLOW_S3_ENDPOINT_URL": s3_url,
                "AWS_ACCESS_KEY_ID": PLACEHOLDER_KEY,
                "AWS_SECRET_ACCESS_KEY": PLACEHOLDER_KEY,
                "AWS_DEFAULT_REGION": REGION,
                # The job runner (GenAI evaluation jobs) adds seven worker processes we never use.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            }
        )
        backend = f"sqlite:///{self.state_dir / 'mlflow.db'}"
        artifacts = f"s3://{self.settings.s3_bucket}/mlflow"

        def spawn(port: int) -> ServiceProcess:
            argv = [
                venv_bin("mlflow"),
                "server",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                backend,
                "--artifacts-destination",
                artifacts,
            ]
            return _spawn("mlflow", argv, port, "/health", env, self.state_dir / "mlflow.log", self.startup_timeout)

        return _on_port(spawn, port)

    def _start_serving(self, port: int | None = None) -> ServiceProcess:
        """The endpoint, pointed at this stack's S3 and MLflow (serves ``champion`` once there is one)."""
        return start_endpoint(
            {**self.env(), "CT_SERVING_ADMIN_TOKEN": self.admin_token},
            self.state_dir / "serving",
            workers=self.settings.serving_workers,
            port=port,
            log_path=self.state_dir / "serving.log",
            startup_timeout=self.startup_timeout,
        )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m devtools.services``."""
    parser = argparse.ArgumentParser(prog="python -m devtools.services", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    return parser


def next_steps(env_file: Path) -> list[str]:
    """The three commands a developer runs after ``up``: the environment, a batch, the ingest DAG."""
    try:
        shown = env_file.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = env_file.resolve()
    return [
        f"source {shlex.quote(str(shown))}",
        "python -m devtools.datasets --rows 5000 --seed 1 --format parquet",
        "airflow dags test ingest_new_data",
    ]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    services = LocalServices(state_dir=args.state_dir)
    if args.command == "up":
        services.airflow_home = args.state_dir / "airflow"
        try:
            services.start()  # stops whatever it started when a step fails
        except ServiceError as error:
            print(f"services up failed, nothing left running: {error}", file=sys.stderr)
            return 1
        for name, proc in services.processes.items():
            print(f"{name:7s} {proc.url}  (pid {proc.pid}, log {proc.log_path})")
        applied = "; ".join(services.airflow_settings_applied)
        print(f"airflow home {services.airflow_home}: metadata DB migrated, airflow_settings.yaml applied ({applied})")
        print("next:")
        for line in next_steps(services.env_file):
            print(f"  {line}")
        return 0
    if args.command == "down":
        services.stop()
        print("stopped")
        return 0
    if not services.state_file.exists():
        print("not running")
        return 1
    services.processes = services.load_state()
    if args.command == "env":
        print(services.env_file.read_text(), end="")
        return 0
    health = services.status()
    for name, ok in health.items():
        print(f"{name:7s} {'healthy' if ok else 'DOWN'}  {services.processes[name].url}")
    if services.airflow_home is not None:
        database = services.airflow_home / "airflow.db"
        health["airflow"] = database.exists()
        if health["airflow"]:
            print(f"airflow ready    {services.airflow_home} (metadata DB, DAGs from {PROJECT_ROOT / 'dags'})")
        else:
            print(f"airflow MISSING  {database}: run `make services-up` again")
    return 0 if all(health.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
