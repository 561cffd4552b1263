"""Which models each worker serves, and how every worker of every replica follows one desired deployment.

The desired deployment (champion, candidate, mode, shares: :mod:`..rollout_state`) lives in one S3
object per model. Every worker process of every endpoint replica, on any host, polls it every
``CT_SERVING_POLL_SECONDS`` with a conditional GET (``304`` while unchanged). When it changes, the
worker loads the versions it does not hold yet beside the ones it serves, then swaps a single
reference (:class:`Serving`), so requests in flight finish on the old models and the next ones use
the new: no request fails during a swap. A worker keeps the versions it served last in memory, so a
promotion (the candidate becomes the champion) or an abort swaps without loading anything.

Within one replica, the workers share ``CT_SERVING_STATE_DIR``: each writes a heartbeat (pid, the
generation it applied, the versions it serves), so an admin call can wait until all of them serve
what it wrote; the worker that wrote a new state also touches a nudge file there, so the other
workers of its replica read the new state at once instead of at their next poll.

With no object in S3 (nothing was ever deployed through the endpoint), a worker serves the
registry's ``champion`` alias; so does a worker that cannot reach S3 before its first read of the
state (an answer beats none), until a poll gets through.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.continuous_training.config import Settings
from include.continuous_training.rollout_state import DeploymentStore, DesiredDeployment, StoredDeployment

if TYPE_CHECKING:
    import xgboost as xgb

    from include.continuous_training.features import FeatureSpec

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 0.5
KEPT_VERSIONS = 4  # loaded models a worker keeps for a quick swap back (promote, abort, rollback)
RETRY_SECONDS = 2.0  # after a failed load: the next attempt


@dataclass(frozen=True)
class ServedModel:
    version: str
    booster: xgb.Booster
    spec: FeatureSpec
    run_id: str | None
    loaded_at: float
    lookups: dict[str, dict[str, int]]


@dataclass(frozen=True)
class Serving:
    """What one worker serves: read as one reference per request, replaced as a whole."""

    champion: ServedModel | None
    candidate: ServedModel | None = None
    state: DesiredDeployment | None = None  # None: no desired deployment stored (the registry's champion)
    etag: str | None = None
    # Champion and candidate turn a record into the same matrix (same features, categories and nullable
    # features): the candidate scores the champion's matrix instead of encoding the records again.
    same_encoding: bool = False

    @property
    def mode(self) -> str:
        return self.state.mode if self.state else "direct"

    @property
    def generation(self) -> int:
        return self.state.generation if self.state else 0

    def summary(self) -> dict[str, Any]:
        """What /metadata and the heartbeats report."""
        state = self.state
        return {
            "generation": self.generation,
            "mode": self.mode,
            "canary_percent": state.canary_percent if state else 0.0,
            "shadow_percent": state.shadow_percent if state else 0.0,
            "champion": self.champion.version if self.champion else None,
            "candidate": self.candidate.version if self.candidate else None,
            "etag": self.etag,
        }


NOTHING = Serving(champion=None)


def encodes_alike(one: FeatureSpec, other: FeatureSpec) -> bool:
    """Both specs turn every record into the same matrix (and refuse the same records)."""
    return (one.numeric, one.categories, one.nullable) == (other.numeric, other.categories, other.nullable)


class ModelStore:
    """Holds what this worker serves; follows the desired deployment; loads by version, swaps atomically."""

    def __init__(
        self,
        settings: Settings,
        state_dir: Path | None = None,
        on_tick: Callable[[Serving], None] | None = None,
        deployments: DeploymentStore | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir or settings.serving_state_dir)
        (self.state_dir / "workers").mkdir(parents=True, exist_ok=True)
        self.deployments = deployments or DeploymentStore(settings)
        self._serving = NOTHING
        self._kept: OrderedDict[str, ServedModel] = OrderedDict()
        self._load_lock = threading.Lock()
        self._apply_lock = threading.Lock()
        self._observed_at = 0.0  # when the state now applied was read (monotonic): older reads never win
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self._next_champion_lookup = 0.0
        self._next_poll = 0.0
        self._nudged_at = self._nudge_mtime()
        self._on_tick = on_tick or (lambda serving: None)

    # -- what is served ---------------------------------------------------------------------------
    @property
    def serving(self) -> Serving:
        return self._serving  # one reference read: a request sees either the old or the new deployment

    @property
    def current(self) -> ServedModel | None:
        """The champion this worker serves (None: nothing)."""
        return self._serving.champion

    def resolve(self, target: str) -> str:
        """A version number from ``target`` (a version number or an alias such as ``champion``)."""
        from include.continuous_training.registry import tracking_client, version_by_alias

        if target.isdigit():
            return target
        version = version_by_alias(tracking_client(self.settings), self.settings.model_name, target)
        if version is None:
            raise LookupError(f"{self.settings.model_name} has no version aliased {target!r}")
        return str(version.version)

    def load(self, version: str) -> ServedModel:
        """Download and load one version (UBJ + feature spec, no pickle)."""
        from include.continuous_training.registry import load_model, tracking_client

        loaded = load_model(f"models:/{self.settings.model_name}/{version}")
        # One thread per prediction: requests are tiny, and OpenMP threads of several workers spinning
        # on the same cores cut throughput to a fraction (figures: the serving rows of `make bench`).
        loaded.booster.set_param({"nthread": 1})
        run_id = tracking_client(self.settings).get_model_version(self.settings.model_name, version).run_id
        lookups = {
            column: {value: code for code, value in enumerate(values)}
            for column, values in loaded.spec.categories.items()
        }
        return ServedModel(version, loaded.booster, loaded.spec, run_id, time.time(), lookups)

    def model(self, version: str) -> ServedModel:
        """``version`` loaded in this worker: the one it serves or kept, else downloaded (and kept)."""
        with self._load_lock:
            serving = self._serving
            for model in (serving.champion, serving.candidate, self._kept.get(version)):
                if model is not None and model.version == version:
                    self._keep(model)
                    return model
            model = self.load(version)
            self._keep(model)
            return model

    def _keep(self, model: ServedModel) -> None:
        self._kept[model.version] = model
        self._kept.move_to_end(model.version)
        while len(self._kept) > KEPT_VERSIONS:
            self._kept.popitem(last=False)

    def apply(self, stored: StoredDeployment | None, observed_at: float) -> Serving:
        """Serve ``stored`` (loading what is missing first); a read older than the applied one is ignored.

        ``observed_at``: ``time.monotonic()`` when the state was read (or written). Raises when a
        version does not load; what was served stays served.
        """
        if observed_at < self._observed_at:
            return self._serving
        state = stored.state if stored else None
        champion = self.model(state.champion) if state and state.champion else None
        candidate = self.model(state.candidate) if state and state.candidate else None
        with self._apply_lock:
            if observed_at < self._observed_at:  # a newer state was applied while this one loaded
                return self._serving
            before = self._serving
            same = champion is not None and candidate is not None and encodes_alike(champion.spec, candidate.spec)
            self._serving = Serving(champion, candidate, state, stored.etag if stored else None, same)
            self._observed_at = observed_at
        if before.summary() != self._serving.summary():
            log.info(
                "worker %d serves %s generation %s: %s",
                os.getpid(),
                self.settings.model_name,
                self._serving.generation,
                self._serving.summary(),
            )
        return self._serving

    def serve_registry_champion(self) -> None:
        """No desired deployment stored: serve the registry's ``champion`` alias (asked every 5 s until one exists)."""
        if self._serving.champion is not None or self._serving.state is not None:
            return
        if time.monotonic() < self._next_champion_lookup:
            return
        self._next_champion_lookup = time.monotonic() + 5.0
        version = self.resolve("champion")
        model = self.model(version)
        with self._apply_lock:
            if self._serving.state is None and self._serving.champion is None:
                self._serving = Serving(model)
                log.info("worker %d serves %s champion version %s", os.getpid(), self.settings.model_name, version)

    # -- writing the desired deployment ---------------------------------------------------------------
    def write(self, change: Callable[[DesiredDeployment | None], DesiredDeployment]) -> StoredDeployment:
        """Change the shared desired deployment (CAS, retried), serve it here, and nudge this replica's workers."""
        stored = self.deployments.update(change)
        written_at = time.monotonic()
        try:
            self.apply(stored, written_at)
        except Exception as error:  # written all the same: the sync loop loads it at its next poll
            self.last_error = f"{type(error).__name__}: {error}"
            log.warning("serving generation %d here failed: %s", stored.state.generation, self.last_error)
        self.nudge()
        return stored

    # -- coordination between the workers of one replica ----------------------------------------------
    @property
    def nudge_file(self) -> Path:
        return self.state_dir / "deployment.nudge"

    def _nudge_mtime(self) -> int:
        try:
            return self.nudge_file.stat().st_mtime_ns
        except OSError:
            return 0

    def nudge(self) -> None:
        """Tell this replica's other workers to read the desired deployment now (atomic rename)."""
        tmp = self.state_dir / f".deployment.nudge.{os.getpid()}.tmp"
        tmp.write_text(f"{os.getpid()} {time.time()}\n")
        tmp.replace(self.nudge_file)

    def heartbeat(self) -> None:
        serving = self._serving
        self._on_tick(serving)
        path = self.state_dir / "workers" / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        summary = serving.summary()
        tmp.write_text(
            json.dumps({"pid": os.getpid(), "version": summary.pop("champion"), **summary, "at": time.time()})
        )
        tmp.replace(path)

    def workers(self) -> list[dict[str, Any]]:
        """Workers of this replica whose process is alive, with what each last reported."""
        live = []
        for path in (self.state_dir / "workers").glob("*.json"):
            try:
                raw = json.loads(path.read_text())
                os.kill(int(raw["pid"]), 0)  # a busy worker is late, not gone: only a dead pid drops out
            except (OSError, ValueError, KeyError):
                continue
            live.append(raw)
        return sorted(live, key=lambda w: int(w["pid"]))

    def _wait(self, done: Callable[[dict[str, Any]], bool], what: str, timeout: float) -> list[dict[str, Any]]:
        expected = max(self.settings.serving_workers, 1)
        deadline = time.monotonic() + timeout
        while True:
            workers = self.workers()
            if len(workers) >= expected and all(done(w) for w in workers):
                return workers
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers did not all {what} in {timeout:.0f}s: {workers}")
            time.sleep(0.05)

    def wait_for_all(self, version: str | None, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Block until every worker (``CT_SERVING_WORKERS`` of them) serves champion ``version``; else TimeoutError."""
        return self._wait(lambda w: w.get("version") == version, f"switch to version {version}", timeout)

    def wait_for_state(self, stored: StoredDeployment, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Block until every worker of this replica applied ``stored`` (or a later generation); else TimeoutError."""
        generation = stored.state.generation
        return self._wait(
            lambda w: w.get("etag") == stored.etag or int(w.get("generation") or 0) > generation,
            f"apply generation {generation}",
            timeout,
        )

    def converged(self, workers: list[dict[str, Any]] | None = None) -> bool:
        """Every expected worker of this replica reports the generation this one applied."""
        workers = self.workers() if workers is None else workers
        etag = self._serving.etag
        return len(workers) >= max(self.settings.serving_workers, 1) and all(w.get("etag") == etag for w in workers)

    # -- the sync loop ---------------------------------------------------------------------------------
    def sync_once(self) -> None:
        """Converge on the desired deployment (or the registry's champion when none is stored)."""
        now = time.monotonic()
        nudged = self._nudge_mtime()
        if now < self._next_poll and nudged == self._nudged_at:
            return
        self._nudged_at = nudged
        self._next_poll = now + self.settings.serving_poll_seconds
        try:
            poll = self.deployments.poll(self._serving.etag)
            if poll.changed and poll.stored is not None:
                self.apply(poll.stored, now)
            elif self._serving.state is None:
                self.serve_registry_champion()
            # A state that disappeared (deleted by hand) leaves what it said served: there is nothing to converge to.
            self.last_error = None
        except Exception as error:  # keep serving what we have; report it on /ready and /metadata
            self._next_poll = time.monotonic() + max(RETRY_SECONDS, self.settings.serving_poll_seconds)
            message = f"{type(error).__name__}: {error}"
            if message != self.last_error:
                log.warning("deployment sync failed: %s", message)
            self.last_error = message
            if self._serving.state is None:
                # The store is unreachable before this worker ever read it: answering with the registry's
                # champion beats answering nothing; the next poll that gets through converges.
                try:
                    self.serve_registry_champion()
                except Exception as fallback:
                    self.last_error = f"{message}; and the registry's champion: {type(fallback).__name__}: {fallback}"

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.sync_once()
                self.heartbeat()
                self._stop.wait(min(HEARTBEAT_SECONDS, self.settings.serving_poll_seconds))

        self.sync_once()
        self.heartbeat()
        self._thread = threading.Thread(target=loop, name="deployment-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        (self.state_dir / "workers" / f"{os.getpid()}.json").unlink(missing_ok=True)
