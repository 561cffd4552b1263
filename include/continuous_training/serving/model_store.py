"""Which model each worker serves, and how a reload reaches every worker.

Uvicorn runs several worker processes; an ``/admin/reload`` lands on one of them. That worker loads
the target (proving it loads), then publishes it as the *desired* version in a small file in the
serving state directory. Every worker watches that file, loads the new model beside the old one and
swaps a single reference, so requests in flight finish on the old model and the next ones use the
new: no request fails during a swap. Workers write heartbeats (pid, version) so a reload can wait
until all of them serve the target.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.continuous_training.config import Settings

if TYPE_CHECKING:
    import xgboost as xgb

    from include.continuous_training.features import FeatureSpec

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 0.5


@dataclass(frozen=True)
class ServedModel:
    version: str
    booster: xgb.Booster
    spec: FeatureSpec
    run_id: str | None
    loaded_at: float
    lookups: dict[str, dict[str, int]]


class ModelStore:
    """Holds the served model of this worker; loads by version, swaps atomically."""

    def __init__(
        self,
        settings: Settings,
        state_dir: Path | None = None,
        on_tick: Callable[[ServedModel | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir or settings.serving_state_dir)
        (self.state_dir / "workers").mkdir(parents=True, exist_ok=True)
        self._current: ServedModel | None = None
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self._next_champion_lookup = 0.0
        self._on_tick = on_tick or (lambda model: None)

    # -- what is served ---------------------------------------------------------------------------
    @property
    def current(self) -> ServedModel | None:
        return self._current  # one reference read: a request sees either the old or the new model

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

    def activate(self, version: str) -> ServedModel:
        """Serve ``version`` in this worker (no-op when it already does)."""
        with self._load_lock:
            current = self._current
            if current is not None and current.version == version:
                return current
            model = self.load(version)
            self._current = model
            log.info("worker %d now serves %s version %s", os.getpid(), self.settings.model_name, version)
            return model

    # -- coordination between workers ------------------------------------------------------------
    @property
    def desired_file(self) -> Path:
        return self.state_dir / "desired.json"

    def publish(self, version: str | None) -> None:
        """Make ``version`` the one every worker serves (None: serve nothing). Atomic rename."""
        tmp = self.state_dir / f".desired.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"version": version, "model": self.settings.model_name, "at": time.time()}))
        tmp.replace(self.desired_file)

    def desired(self) -> tuple[bool, str | None]:
        """(published?, version) from the desired-version file."""
        try:
            raw = json.loads(self.desired_file.read_text())
        except (OSError, ValueError):
            return False, None
        if raw.get("model") != self.settings.model_name:
            return False, None
        return True, raw.get("version")

    def heartbeat(self) -> None:
        current = self._current
        self._on_tick(current)
        path = self.state_dir / "workers" / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"pid": os.getpid(), "version": current.version if current else None, "at": time.time()})
        )
        tmp.replace(path)

    def workers(self) -> list[dict[str, Any]]:
        """Workers whose process is alive, with the version each last reported."""
        live = []
        for path in (self.state_dir / "workers").glob("*.json"):
            try:
                raw = json.loads(path.read_text())
                os.kill(int(raw["pid"]), 0)  # a busy worker is late, not gone: only a dead pid drops out
            except (OSError, ValueError, KeyError):
                continue
            live.append(raw)
        return sorted(live, key=lambda w: int(w["pid"]))

    def wait_for_all(self, version: str | None, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Block until every worker (``CT_SERVING_WORKERS`` of them) serves ``version``; else TimeoutError."""
        expected = max(self.settings.serving_workers, 1)
        deadline = time.monotonic() + timeout
        while True:
            workers = self.workers()
            if len(workers) >= expected and all(w.get("version") == version for w in workers):
                return workers
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers did not all switch to version {version} in {timeout:.0f}s: {workers}")
            time.sleep(0.1)

    def sync_once(self) -> None:
        """Converge on the desired version (or the champion when none was ever published)."""
        published, version = self.desired()
        try:
            if published:
                if version is None:
                    self._current = None
                elif self._current is None or self._current.version != version:
                    self.activate(version)
            elif self._current is None and time.monotonic() >= self._next_champion_lookup:
                self._next_champion_lookup = time.monotonic() + 5.0  # no champion yet: ask MLflow every 5 s
                self.activate(self.resolve("champion"))
            self.last_error = None
        except Exception as error:  # keep serving what we have; report it on /ready
            message = f"{type(error).__name__}: {error}"
            if message != self.last_error:
                log.warning("model sync failed: %s", message)
            self.last_error = message

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.sync_once()
                self.heartbeat()
                self._stop.wait(HEARTBEAT_SECONDS)

        self.sync_once()
        self.heartbeat()
        self._thread = threading.Thread(target=loop, name="model-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        (self.state_dir / "workers" / f"{os.getpid()}.json").unlink(missing_ok=True)
