"""Deploy a registered version, prove it serves what was evaluated, and roll back by itself.

A :class:`DeploymentTarget` knows how to make an endpoint serve a version and which version it
serves. Targets:

- ``local`` (:class:`LocalEndpoint`): this package's endpoint, through its admin routes, which write
  the desired deployment every replica follows (direct deployment, shadow and canary rollouts).

``CT_DEPLOYMENT_TARGET=none`` promotes without deploying (no target is built).

:func:`smoke_test` sends a golden set to the endpoint one row at a time and fails unless every
prediction equals the offline prediction of the same model, the p99 latency is within budget and no
request failed. "Equals": binary, the probability of the positive class within 1e-6 (as always);
multiclass, every class's probability within 1e-6 and the same label; regression, the prediction
within 1e-6 relative to its size (``|online - offline| / max(1, |offline|)``).
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from include.continuous_training.config import Settings
from include.continuous_training.errors import ContinuousTrainingError, DeploymentError
from include.continuous_training.records import TrainingData

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DeploymentError", "DeploymentTarget", "LocalEndpoint", "SmokeTestFailed", "http_json", "target_for"]
log = logging.getLogger(__name__)
MAX_ABS_DIFF = 1e-6


class SmokeTestFailed(ContinuousTrainingError):
    """The deployed version did not serve what was evaluated (a retry would test the same thing)."""


class DeploymentTarget(Protocol):
    """An endpoint that can serve a version, say which it serves, stop serving, and roll a candidate out."""

    name: str

    def deploy(self, version: str) -> int: ...

    def unload(self) -> None: ...

    def rollout_state(self) -> dict[str, Any] | None: ...

    def serving_version(self) -> str | None: ...

    def start_rollout(
        self,
        candidate: str,
        mode: str,
        canary_percent: float = 0.0,
        shadow_percent: float | None = None,
        reason: str = "",
        updated_by: str = "admin",
    ) -> int: ...

    def promote_candidate(self, reason: str = "", updated_by: str = "admin") -> int: ...

    def abort_rollout(self, reason: str = "", updated_by: str = "admin") -> int: ...

    def wait_converged(self, generation: int, timeout: float = 60.0) -> dict[str, Any]: ...


def http_json(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """One JSON request: ``(status, decoded body)``; HTTP errors are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if not url.startswith(("http://", "https://")):
        raise DeploymentError(f"the endpoint URL must be http(s), got {url!r}", retryable=False)
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310  # nosec B310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (checked)  # nosec B310
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        payload = error.read()
        try:
            return int(error.code), json.loads(payload or b"null")
        except ValueError:
            return int(error.code), payload.decode(errors="replace")


@dataclass
class LocalEndpoint:
    """This package's serving endpoint (one replica's URL, or a load balancer in front of several).

    Every change is written to the desired deployment all replicas follow
    (:mod:`include.continuous_training.rollout_state`) through the endpoint's admin routes:
    :meth:`deploy` (direct: champion := version) and :meth:`unload` wait until the replica behind
    ``url`` serves it; :meth:`start_rollout`, :meth:`promote_candidate` and :meth:`abort_rollout`
    return the new generation at once, and :meth:`wait_converged` waits for it.
    """

    url: str
    token: str | None
    name: str = "local"

    def _admin(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
        if not self.token:
            raise DeploymentError(f"CT_SERVING_ADMIN_TOKEN is not set: cannot call {path} on the endpoint")
        try:
            return http_json(method, f"{self.url}{path}", body, self.token, timeout=timeout)
        except (urllib.error.URLError, OSError) as error:
            raise DeploymentError(f"endpoint {self.url} unreachable: {error}", retryable=True) from error

    def deploy(self, version: str) -> int:
        """Direct deployment of ``version`` (candidate cleared); returns once the replica behind ``url``
        serves it in every worker. The generation written."""
        status, payload = self._admin("POST", "/admin/reload", {"version": version}, timeout=180)
        if status != 200 or str(payload.get("model_version")) != str(version):
            # 409 (does not load, or lost a write race) and 422 cannot change on retry; 503/504 may.
            raise DeploymentError(
                f"endpoint {self.url} refused version {version}: HTTP {status} {payload}",
                retryable=status in {503, 504},
            )
        log.info(
            "endpoint %s serves version %s on %s worker(s), generation %s",
            self.url,
            version,
            payload.get("workers"),
            payload.get("generation"),
        )
        return int(payload["generation"])

    def unload(self) -> None:
        """Nothing to roll back to (first deployment): stop serving rather than serve a failed model."""
        status, payload = self._admin("POST", "/admin/unload", {})
        if status != 200:
            raise DeploymentError(f"endpoint {self.url} refused to unload: HTTP {status} {payload}")

    def rollout_state(self) -> dict[str, Any] | None:
        """The stored desired deployment (``DesiredDeployment.as_dict()``), or None when none was written."""
        status, payload = self._admin("GET", "/admin/rollout")
        if status != 200:
            raise DeploymentError(f"endpoint {self.url}: GET /admin/rollout HTTP {status} {payload}", retryable=True)
        stored = payload.get("stored")
        return dict(stored["state"]) if stored else None

    def _write(self, body: dict[str, Any], what: str) -> int:
        status, payload = self._admin("POST", "/admin/rollout", body)
        if status != 200:
            raise DeploymentError(
                f"endpoint {self.url} refused to {what}: HTTP {status} {payload}", retryable=status in {503, 504}
            )
        generation = int(payload["generation"])
        log.info("endpoint %s: %s, generation %d: %s", self.url, what, generation, payload.get("state"))
        return generation

    def start_rollout(
        self,
        candidate: str,
        mode: str,
        canary_percent: float = 0.0,
        shadow_percent: float | None = None,
        reason: str = "",
        updated_by: str = "admin",
    ) -> int:
        """Roll ``candidate`` out beside the current champion (``mode`` shadow or canary; call again for
        the next canary step); the new generation. ``shadow_percent`` None: the endpoint's
        ``CT_SHADOW_PERCENT``."""
        body: dict[str, Any] = {
            "candidate": str(candidate),
            "mode": mode,
            "canary_percent": canary_percent,
            "reason": reason,
            "updated_by": updated_by,
        }
        if shadow_percent is not None:
            body["shadow_percent"] = shadow_percent
        return self._write(body, f"roll out version {candidate} ({mode})")

    def promote_candidate(self, reason: str = "", updated_by: str = "admin") -> int:
        """The candidate becomes the champion (direct mode), if the state is still the one read here."""
        state = self.rollout_state()
        if not state or not state.get("candidate"):
            raise DeploymentError(f"endpoint {self.url}: no candidate to promote (state: {state})")
        body = {
            "champion": state["candidate"],
            "candidate": None,
            "mode": "direct",
            "reason": reason or f"promote version {state['candidate']}",
            "updated_by": updated_by,
            "expected_generation": state["generation"],
        }
        return self._write(body, f"promote version {state['candidate']}")

    def abort_rollout(self, reason: str = "", updated_by: str = "admin") -> int:
        """Clear the candidate; the champion stays and answers every request (direct mode)."""
        body = {"candidate": None, "mode": "direct", "reason": reason or "abort rollout", "updated_by": updated_by}
        return self._write(body, "abort the rollout")

    def wait_converged(self, generation: int, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the replica behind ``url`` applied ``generation`` (or a later one) in every worker;
        its ``/metadata`` ``deployment`` section. :class:`DeploymentError` (retryable) on timeout.

        Behind a load balancer each call reaches one replica: call it per replica URL to know them all.
        """
        deadline = time.monotonic() + timeout
        seen: Any = None
        while True:
            try:
                _, payload = http_json("GET", f"{self.url}/metadata", timeout=10)
                seen = payload.get("deployment") if isinstance(payload, dict) else payload
            except (urllib.error.URLError, OSError) as error:
                seen = str(error)
            if isinstance(seen, dict) and int(seen.get("generation") or 0) >= generation and seen.get("converged"):
                return seen
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"endpoint {self.url} did not apply generation {generation} in {timeout:.0f}s: {seen}",
                    retryable=True,
                )
            time.sleep(0.2)

    def serving_version(self) -> str | None:
        try:
            status, payload = http_json("GET", f"{self.url}/ready", timeout=10)
        except (urllib.error.URLError, OSError):
            return None
        return str(payload["model_version"]) if status == 200 else None


def rollback_to_champion(
    settings: Settings, rolled_back: str | None = None, who: str | None = None, why: str = "rolled back"
) -> str | None:
    """Point the endpoint back at the ``champion`` version (or unload it when there is none).

    ``rolled_back`` is the version whose deployment failed: it loses the ``challenger`` alias (it
    failed a gate after all) and is tagged ``ct.rolled_back``.
    """
    from include.continuous_training.registry import CHAMPION, retire_challenger, tracking_client, version_by_alias

    client = tracking_client(settings)
    champion = version_by_alias(client, settings.model_name, CHAMPION)
    target = target_for(settings)
    if champion is None:
        target.unload()
    else:
        target.deploy(str(champion.version))
    if rolled_back is not None and (champion is None or str(champion.version) != rolled_back):
        retire_challenger(client, settings, rolled_back, who=who, why=why)
    return str(champion.version) if champion is not None else None


def complete_rollout(settings: Settings, version: str, updated_by: str) -> None:
    """After a rollout's last stage: every replica serves ``version`` as the champion (idempotent).

    A re-run finds it done and changes nothing; a state that holds another candidate (someone started
    another rollout meanwhile) is refused rather than overwritten.
    """
    target = target_for(settings)
    state = target.rollout_state() or {}
    if str(state.get("champion")) == version and not state.get("candidate"):
        return
    if str(state.get("candidate")) != version:
        raise DeploymentError(
            f"cannot promote version {version} at the endpoint: its desired state is {state}", retryable=False
        )
    generation = target.promote_candidate(reason=f"rollout of version {version} passed", updated_by=updated_by)
    target.wait_converged(generation, timeout=180)


def target_for(settings: Settings) -> DeploymentTarget:
    """The endpoint ``CT_DEPLOYMENT_TARGET`` names (``none`` has none: callers skip deploying)."""
    if settings.deployment_target == "local":
        return LocalEndpoint(settings.serving_url, settings.serving_admin_token)
    raise DeploymentError(f"no deployment target for CT_DEPLOYMENT_TARGET={settings.deployment_target!r}")


# -- smoke test ------------------------------------------------------------------------------------
def prediction_difference(task: str, payload: dict[str, Any], offline: Any, offline_label: Any = None) -> float:
    """How far one endpoint response is from the offline prediction (see the module docstring).

    A multiclass answer naming another class than the offline one (the same probabilities cannot)
    counts as infinitely far.
    """
    if task == "regression":
        online = float(payload["prediction"])
        return abs(online - float(offline)) / max(1.0, abs(float(offline)))
    if task == "multiclass":
        if offline_label is not None and payload.get("label") != offline_label:
            return math.inf
        online_row = payload["probabilities"]
        return max(abs(float(online_row[name]) - float(p)) for name, p in offline.items())
    return abs(float(payload["probability"]) - float(offline))


@dataclass
class SmokeReport:
    version: str
    requests: int
    errors: int
    max_abs_diff: float
    p50_ms: float
    p99_ms: float
    p99_budget_ms: float
    wrong_version: int
    first_error: str | None
    task: str = "binary"

    @property
    def passed(self) -> bool:
        return (
            self.errors == 0
            and self.wrong_version == 0
            and self.max_abs_diff <= MAX_ABS_DIFF
            and self.p99_ms <= self.p99_budget_ms
        )

    def reason(self) -> str:
        problems = []
        if self.errors:
            problems.append(f"{self.errors}/{self.requests} requests failed (first: {self.first_error})")
        if self.wrong_version:
            problems.append(f"{self.wrong_version} responses came from another model version than {self.version}")
        if not self.max_abs_diff <= MAX_ABS_DIFF:
            what = "relative |online - offline|" if self.task == "regression" else "|online - offline| (or a label)"
            problems.append(f"max {what} = {self.max_abs_diff:.3g} > {MAX_ABS_DIFF:g}")
        if self.p99_ms > self.p99_budget_ms:
            problems.append(f"p99 latency {self.p99_ms:.1f} ms > budget {self.p99_budget_ms:.0f} ms")
        return "; ".join(problems) or f"ok: {self.requests} requests, p99 {self.p99_ms:.1f} ms"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def golden_records(frame: pd.DataFrame, feature_names: list[str], rows: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of holdout rows as JSON-ready request records."""
    sample = frame.sample(n=min(rows, len(frame)), random_state=seed)[feature_names]
    return list(json.loads(sample.to_json(orient="records", double_precision=15)))


def smoke_test(
    url: str,
    version: str,
    records: list[dict[str, Any]],
    expected: list[Any],
    p99_budget_ms: float,
    task: str = "binary",
    expected_labels: list[Any] | None = None,
    path: str = "/predict",
    token: str | None = None,
) -> SmokeReport:
    """One request per golden record; compare with the offline predictions of the same model.

    ``expected``: per record the offline P(positive) (binary), ``{class: p}`` (multiclass) or the
    prediction (regression); ``expected_labels``: the offline class of each record (classifiers).
    ``path``: the route (``/admin/predict?variant=candidate`` for a candidate that takes no traffic
    yet, with the admin ``token``).
    """
    labels = expected_labels or [None] * len(records)
    latencies, diffs = [], []
    errors = wrong_version = 0
    first_error = None
    for record, offline, offline_label in zip(records, expected, labels, strict=True):
        started = time.perf_counter()
        try:
            status, payload = http_json("POST", f"{url}{path}", record, token=token, timeout=10)
        except (urllib.error.URLError, OSError) as error:
            status, payload = 0, str(error)
        latencies.append((time.perf_counter() - started) * 1000)
        if status != 200:
            errors += 1
            first_error = first_error or f"HTTP {status}: {str(payload)[:200]}"
            continue
        if str(payload.get("model_version")) != str(version):
            wrong_version += 1
        try:
            diffs.append(prediction_difference(task, payload, offline, offline_label))
        except (KeyError, TypeError, ValueError) as error:  # a response without the task's fields
            errors += 1
            first_error = first_error or f"HTTP 200 without the {task} fields ({error!r}): {str(payload)[:200]}"
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)] if latencies else math.inf
    return SmokeReport(
        version=version,
        requests=len(records),
        errors=errors,
        max_abs_diff=max(diffs) if diffs else math.inf,
        p50_ms=latencies[len(latencies) // 2] if latencies else math.inf,
        p99_ms=p99,
        p99_budget_ms=p99_budget_ms,
        wrong_version=wrong_version,
        first_error=first_error,
        task=task,
    )


def run_smoke_test(
    s3: Any, settings: Settings, data: TrainingData, version: str, variant: str | None = None
) -> SmokeReport:
    """Golden set from this run's holdout; offline scores from the registered version itself.

    ``variant`` ``"champion"`` (just deployed) or ``"candidate"`` (loaded beside the champion for a
    rollout or an approval, answering no caller yet): the golden set goes to
    ``/admin/predict?variant=...`` (authenticated, not written to the inference log, so drift and rollout
    analyses never see it). None: through the public ``/predict`` (logged like any caller's request).
    """
    from include.continuous_training.registry import load_model
    from include.continuous_training.storage import read_parquet_uri

    model = load_model(f"models:/{settings.model_name}/{version}")
    holdout = read_parquet_uri(s3, settings, data["holdout_uri"])
    records = golden_records(holdout, model.spec.feature_names, settings.smoke_requests, settings.seed)
    import pandas as pd

    expected, labels = offline_predictions(model, pd.DataFrame.from_records(records), settings.decision_threshold)
    path, token = (
        ("/predict", None) if variant is None else (f"/admin/predict?variant={variant}", settings.serving_admin_token)
    )
    return smoke_test(
        settings.serving_url, version, records, expected, settings.smoke_p99_ms, model.spec.task, labels, path, token
    )


def offline_predictions(model: Any, frame: pd.DataFrame, threshold: float) -> tuple[list[Any], list[Any] | None]:
    """What :func:`smoke_test` expects of each row of ``frame``: the model's own prediction, and its class.

    Per row: P(positive) (binary), ``{class: p}`` (multiclass) or the prediction (regression); the
    classes are None for regression.
    """
    spec = model.spec
    output = spec.predict(model.booster, spec.matrix(frame))
    if spec.task == "regression":
        return output.tolist(), None
    labels = spec.predicted_labels(output, threshold)
    if spec.task == "multiclass":
        names = [str(c) for c in spec.classes]
        return [dict(zip(names, row, strict=True)) for row in output.tolist()], labels
    return output.tolist(), labels
