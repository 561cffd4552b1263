"""FastAPI app of the serving endpoint.

Routes:

- ``POST /predict``: one record (a JSON object) or a batch (a JSON array, or ``{"records": [...]}``).
  Every record is checked against the champion's feature spec; problems come back as 4xx with
  field-level messages (``loc`` = record index and field), never a 500. The response carries
  ``prediction_id`` and ``model_version``, and what the answering model predicts (its ``task``):
  binary ``probability`` (of the positive class) and ``label`` (the class value); multiclass
  ``label``, ``probability`` (of that class) and ``probabilities`` (``{class: p}``); regression
  ``prediction``.
- ``GET /health`` (process alive), ``GET /ready`` (a champion is loaded), ``GET /metadata`` (the
  champion's run, data manifest and decision, and ``deployment``: the generation, mode, shares and
  versions this worker applied, every worker of this replica, ``converged``), ``GET /metrics``
  (Prometheus, aggregated over all workers; per variant: ``ct_variant_*``).
- Admin, with ``Authorization: Bearer <CT_SERVING_ADMIN_TOKEN>`` (without a configured token every
  admin request is refused with 401). Each writes the desired deployment every replica follows
  (:mod:`..rollout_state`), after proving here that every version it names loads (409 if not):

  - ``POST /admin/reload`` ``{"version": "7"}`` or ``{"alias": "champion"}``: direct deployment
    (champion := that version, candidate cleared); answers once every worker of this replica serves
    it: ``{"model_version", "workers", "generation"}``;
  - ``POST /admin/unload``: serve nothing (same answer, ``model_version`` null);
  - ``POST /admin/rollout`` ``{"mode", "candidate", "canary_percent", "shadow_percent", "champion",
    "reason", "updated_by", "expected_generation"}`` (``champion`` defaults to the current one,
    ``shadow_percent`` to ``CT_SHADOW_PERCENT``; with ``expected_generation`` the write is refused
    with 409 unless the stored generation is that one): ``{"generation", "state"}``, without waiting;
  - ``GET /admin/rollout``: the stored state (``stored``) and what this worker applied (``applied``).

Modes at request time (the state's ``mode``):

- ``direct``: the champion answers; the response is what it always was.
- ``shadow``: the champion answers (the same bytes as ``direct``); ``shadow_percent`` of requests are
  scored by the candidate off the response path (:mod:`.variants`: bounded queue, dropped when full).
- ``canary``: the candidate answers the records whose entity (:func:`..rollout_state.entity_key`: the
  id column, else the record) falls under ``canary_percent``; if it fails on them the champion
  answers instead and the error counts against the candidate. A batch response carries
  ``model_version`` per prediction (the top-level one is the champion's); ``shadow_percent`` of
  requests are also scored off the path by the variant that did not answer.

Inference-log rows name their ``variant`` (``champion`` / ``candidate``), whether they were
``served`` (answered the caller), the variant's ``latency_ms`` for the request (encode + predict; null
for an off-path row scored in one call with other requests' rows, see :mod:`.variants`) and an
``error``; both variants' rows of one record share its ``prediction_id``.

The request path uses orjson and numpy only: no pandas, no pydantic models per request.
"""

from __future__ import annotations

import hmac
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI, Request, Response

from include.continuous_training.config import Settings, load_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]
SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Prometheus metrics in multiprocess mode, so /metrics adds up every worker."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        from prometheus_client import Counter, Gauge, Histogram, Summary

        self.requests = Counter("ct_http_requests_total", "HTTP requests", ["route", "code"])
        self.latency = Histogram("ct_http_request_seconds", "Request latency", ["route"], buckets=LATENCY_BUCKETS)
        self.scores = Histogram(
            "ct_prediction_score",
            "Predicted probabilities: of the positive class (binary), of the predicted class (multiclass)",
            buckets=SCORE_BUCKETS,
        )
        # A regression prediction has no fixed range for buckets: count and sum (the mean) instead.
        self.values = Summary("ct_prediction_value", "Predicted values (regression models)")
        self.predictions = Counter("ct_predictions_total", "Records scored")
        self.model_version = Gauge("ct_model_version", "Served model version per worker", multiprocess_mode="liveall")
        self.log_written = Counter("ct_inference_log_rows_written_total", "Inference-log rows written to S3")
        self.log_dropped = Counter("ct_inference_log_rows_dropped_total", "Inference-log rows dropped (buffer full)")
        self.log_buffered = Gauge("ct_inference_log_rows_buffered", "Rows waiting for S3", multiprocess_mode="livesum")
        self.unknown_categories = Counter(
            "ct_unknown_category_total",
            "Values of a categorical feature the model never saw (scored as missing)",
            ["feature"],
        )
        # Per variant (champion / candidate) of a rollout; in direct mode every request is the champion's.
        self.variant_requests = Counter(
            "ct_variant_requests_total",
            "Requests a variant scored; served: whether its answer went to the caller",
            ["variant", "served"],
        )
        self.variant_errors = Counter(
            "ct_variant_errors_total", "Requests a variant failed to score (the champion answered instead)", ["variant"]
        )
        self.variant_latency = Histogram(
            "ct_variant_scoring_seconds",
            "Time a variant took to score a request (encode + predict, no HTTP)",
            ["variant"],
            buckets=LATENCY_BUCKETS,
        )
        self.variant_scores = Histogram(
            "ct_variant_score",
            "Scores per variant (classifiers; see ct_prediction_score)",
            ["variant"],
            buckets=SCORE_BUCKETS,
        )
        self.variant_values = Summary("ct_variant_value", "Predicted values per variant (regression)", ["variant"])
        self.shadow_dropped = Counter(
            "ct_shadow_dropped_total", "Off-path scoring samples dropped because the queue was full"
        )
        self.deployment_generation = Gauge(
            "ct_deployment_generation", "Desired-deployment generation applied per worker", multiprocess_mode="liveall"
        )
        self.candidate_version = Gauge(
            "ct_candidate_version", "Candidate version served per worker (0: none)", multiprocess_mode="liveall"
        )
        # Bound once: .labels() per request costs more than the increment.
        self.champion_served = self.variant_requests.labels("champion", "true")
        self.champion_latency = self.variant_latency.labels("champion")
        self.champion_scores = self.variant_scores.labels("champion")
        self.champion_values = self.variant_values.labels("champion")

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return bytes(generate_latest(registry))


def observe_many(metric: Any, values: Sequence[float]) -> None:
    """``metric.observe(value)`` for each value (a Histogram or Summary child), as one update per bucket.

    In multiprocess mode every observation is a locked write per bucket and sum into the worker's
    mmap file; a 100-row batch would pay for 100 of them per series. Same counts and buckets (a value
    goes into the first bucket whose bound is not below it; NaN into none); the sum is added once.
    A prometheus_client whose histograms are built otherwise gets one call per value.
    """
    if len(values) < 4 or not hasattr(metric, "_sum"):
        for value in values:
            metric.observe(value)
        return
    bounds = getattr(metric, "_upper_bounds", None)
    buckets = getattr(metric, "_buckets", None)
    count = getattr(metric, "_count", None)
    if bounds is not None and buckets is not None and len(buckets) == len(bounds):  # Histogram
        import numpy as np

        placed = np.bincount(np.searchsorted(np.asarray(bounds), np.asarray(values), side="left"))
        for i, n in enumerate(placed.tolist()[: len(bounds)]):
            if n:
                buckets[i].inc(n)
    elif count is not None and bounds is None:  # Summary
        count.inc(len(values))
    else:
        for value in values:
            metric.observe(value)
        return
    metric._sum.inc(sum(values))


def prediction_ids(n: int) -> list[str]:
    """``n`` fresh prediction ids, each what ``uuid.uuid4().hex`` gives, from one read of the OS's randomness."""
    if n < 4:
        return [uuid.uuid4().hex for _ in range(n)]
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])  # RFC 4122 variant
    text = raw.hex()
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]


class RequestMetrics:
    """Pure ASGI middleware (cheaper per request than BaseHTTPMiddleware): count and time every request.

    ``POST /predict`` is answered here, without FastAPI's routing and request objects (the same
    ``score`` function the documented route calls), for single-row throughput (the serving rows of
    ``make bench``). Bodies over the limit are refused while they arrive, not after.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        score: Callable[[bytes], tuple[int, bytes]] | None = None,
        max_body: int = 1 << 20,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.score = score
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if self.score is not None and scope["path"] == "/predict" and scope["method"] == "POST":
            code = await self._predict(receive, send)
            self.metrics.requests.labels("/predict", str(code)).inc()
            self.metrics.latency.labels("/predict").observe(time.perf_counter() - started)
            return
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)

    async def _predict(self, receive: Any, send: Any) -> int:
        import orjson

        assert self.score is not None
        chunks: list[bytes] = []
        size = 0
        more = True
        headers = [(b"content-type", b"application/json")]
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 499  # the client went away; nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                detail = f"body is over the limit of {self.max_body} bytes (refused after reading {size})"
                status, body = 413, orjson.dumps({"detail": detail, "bytes_read": size})
                # Closing is what stops the rest from being read: on a kept-alive connection uvicorn
                # would go on reading (and discarding) the whole declared body.
                headers.append((b"connection", b"close"))
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        else:
            status, body = self.score(b"".join(chunks))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return status


class RequestError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail


def parse_records(body: bytes, settings: Settings) -> tuple[list[Any], bool]:
    """(records, was_single) from a raw body, or RequestError for non-JSON / empty / oversized input."""
    import orjson

    if len(body) > settings.serving_max_body_bytes:
        raise RequestError(413, f"body is {len(body)} bytes; the limit is {settings.serving_max_body_bytes}")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError(400, f"body is not valid JSON: {error}") from None
    single = isinstance(payload, dict) and "records" not in payload
    if single:
        records = [payload]
    elif isinstance(payload, list):
        records = payload
    elif isinstance(payload, dict) and isinstance(payload.get("records"), list):
        records = payload["records"]
    else:
        raise RequestError(422, 'expected a record object, an array of records, or {"records": [...]}')
    if not records:
        raise RequestError(422, "empty batch: send at least one record")
    if len(records) > settings.serving_max_batch:
        raise RequestError(413, f"batch of {len(records)} records; the limit is {settings.serving_max_batch}")
    return records, single


UNKNOWN_CATEGORIES_FIELD = "ct_unknown_categories"  # inference-log column: features whose value the model never saw


# Below this many records a batch is checked record by record: the column-wise pass costs a few
# numpy calls per request, which only a batch pays back (single-row latency: the serving rows of make bench).
COLUMN_WISE_FROM = 4
_NUMBERS = frozenset({int, float})
_NUMBERS_OR_NULL = frozenset({int, float, type(None)})
_TEXT = frozenset({str})
_TEXT_OR_NULL = frozenset({str, type(None)})


def encode_records(records: list[Any], model: Any, metrics: Metrics | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """The float32 matrix for ``records`` and a list of field-level errors (empty when all valid).

    A batch is checked and encoded column by column (:func:`encode_columns`); when some record is not
    what the contract wants, or the batch is small, record by record (:func:`encode_records_by_row`),
    which words the errors. Both give the same matrix, bit for bit, and mark the records alike.
    """
    encoded = encode_columns(records, model) if len(records) >= COLUMN_WISE_FROM else None
    if encoded is None:
        return encode_records_by_row(records, model, metrics)
    matrix, unknown = encoded
    if unknown:
        counts: Counter[str] = Counter()
        for i, names in unknown.items():
            records[i][UNKNOWN_CATEGORIES_FIELD] = ",".join(names)
            counts.update(names)
        if metrics is not None:
            for name, count in counts.items():
                metrics.unknown_categories.labels(name).inc(count)
    return matrix, []


def encode_columns(records: list[Any], model: Any) -> tuple[Any, dict[int, list[str]]] | None:
    """``records`` checked and encoded a column at a time: ``(matrix, {record index: [unknown features]})``,
    or None when some record breaks the contract (the per-record checks then say where and how).

    One pass per feature over the batch: a set of the value types decides whether the whole column is
    valid (numbers; text for a categorical; ``null`` where the feature is nullable), numpy converts it
    at once (a ``null`` becomes NaN), one finiteness check per block, and categorical codes are one
    dict lookup per value. Nothing is written into the records here.
    """
    import numpy as np

    spec = model.spec
    numeric, categorical = tuple(spec.numeric), list(spec.categories)
    if set(map(type, records)) != {dict}:
        return None  # a record that is no JSON object
    nullable = set(spec.nullable)
    try:
        numbers, texts = _fields(records, numeric), _fields(records, categorical)
    except KeyError:  # a field is absent
        return None
    matrix = np.empty((len(records), len(numeric) + len(categorical)), dtype=np.float32)
    flat = list(chain.from_iterable(numbers))
    kinds = set(map(type, flat))
    nulls = None
    if not kinds <= _NUMBERS:
        if not kinds <= _NUMBERS_OR_NULL:
            return None
        nulls = np.array([[value is None for value in row] for row in numbers], dtype=bool)
        if nulls[:, [name not in nullable for name in numeric]].any():
            return None  # a null where the feature may not be missing
    try:
        # A null becomes NaN; an int converts as assigning it to the float32 matrix would (via float64).
        block = np.array(flat, dtype=np.float64).reshape(len(records), len(numeric))
    except OverflowError:  # an int beyond float64 (never from JSON): the per-record checks report it
        return None
    finite = np.isfinite(block)
    if not finite.all() and (nulls is None or (~finite & ~nulls).any()):
        return None  # NaN or an infinity that is no null
    matrix[:, : len(numeric)] = block
    unknown: dict[int, list[str]] = {}
    for k, (name, column) in enumerate(zip(categorical, zip(*texts, strict=True), strict=True), start=len(numeric)):
        kinds = set(map(type, column))
        if not (kinds <= _TEXT or (name in nullable and kinds <= _TEXT_OR_NULL)):
            return None
        codes = list(map(model.lookups[name].get, column))  # None: a value never seen, or a null
        matrix[:, k] = np.array(codes, dtype=np.float64)
        if None in codes:
            for i, (code, value) in enumerate(zip(codes, column, strict=True)):
                if code is None and value is not None:
                    unknown.setdefault(i, []).append(name)
    return matrix, unknown


def _fields(records: list[dict[str, Any]], names: Sequence[str]) -> list[tuple[Any, ...]]:
    """The values of ``names`` in each record, as one tuple per record (KeyError when one is absent)."""
    if not names:
        return [()] * len(records)
    values = list(map(itemgetter(*names), records))
    return values if len(names) > 1 else [(value,) for value in values]


def encode_records_by_row(
    records: list[Any], model: Any, metrics: Metrics | None = None
) -> tuple[Any, list[dict[str, Any]]]:
    """:func:`encode_records` one record, then one field at a time: what words the field-level errors.

    A categorical value the training window never held is scored as missing (NaN), as training
    encodes it, not refused: the world may have a new channel before the model does. Each one is
    counted per feature (``ct_unknown_category_total{feature=...}`` on ``metrics``) and named in the
    record's :data:`UNKNOWN_CATEGORIES_FIELD` (comma-separated features; the inference log keeps it,
    and the raw value stays logged under its feature, so the drift check sees the new value).
    A ``null`` is a missing value, scored as training scored them, for the features that had missing
    values in training (``spec.nullable``); elsewhere it is refused like the suite refuses it at
    ingest. A wrong type, an absent field or a non-finite number is still an error.
    """
    import numpy as np

    spec = model.spec
    numeric, categorical = spec.numeric, list(spec.categories)
    matrix = np.empty((len(records), len(numeric) + len(categorical)), dtype=np.float32)
    errors: list[dict[str, Any]] = []
    unknown_counts: Counter[str] = Counter()
    nullable = set(spec.nullable)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            errors.append({"loc": [i], "msg": "expected a JSON object", "type": "type_error"})
            continue
        unknown: list[str] = []
        for j, name in enumerate(numeric):
            value = record.get(name)
            if name not in record:
                errors.append({"loc": [i, name], "msg": "field required", "type": "missing"})
            elif value is None and name in nullable:
                matrix[i, j] = np.nan
            elif isinstance(value, bool) or not isinstance(value, int | float):
                errors.append(
                    {"loc": [i, name], "msg": f"expected a number, got {type(value).__name__}", "type": "type_error"}
                )
            elif not math.isfinite(value):
                errors.append({"loc": [i, name], "msg": "must be a finite number", "type": "value_error"})
            else:
                matrix[i, j] = value
        for k, name in enumerate(categorical, start=len(numeric)):
            value = record.get(name)
            if name not in record:
                errors.append({"loc": [i, name], "msg": "field required", "type": "missing"})
            elif value is None and name in nullable:
                matrix[i, k] = np.nan
            elif not isinstance(value, str):
                errors.append(
                    {"loc": [i, name], "msg": f"expected a string, got {type(value).__name__}", "type": "type_error"}
                )
            elif value not in model.lookups[name]:
                matrix[i, k] = np.nan
                unknown.append(name)
            else:
                matrix[i, k] = model.lookups[name][value]
        if unknown:
            record[UNKNOWN_CATEGORIES_FIELD] = ",".join(unknown)
            unknown_counts.update(unknown)
        if len(errors) > 100:
            break
    if metrics is not None and not errors:  # a refused request scored nothing
        for name, count in unknown_counts.items():
            metrics.unknown_categories.labels(name).inc(count)
    return matrix, errors


def predictions_of(spec: Any, output: Any, threshold: float, ids: list[str] | None = None) -> list[dict[str, Any]]:
    """One response entry per row of the model's output (:meth:`FeatureSpec.predict`), with ``score``:
    the number the inference log keeps (P(positive), P(predicted class), or the prediction).

    Binary: ``probability`` and ``label`` (positive at ``probability >= threshold``); multiclass:
    ``label``, ``probability`` of it and ``probabilities`` per class; regression: ``prediction``.
    ``ids``: the rows' ``prediction_id`` (fresh ones when None).
    """
    import numpy as np

    if ids is None:
        ids = prediction_ids(len(output))
    if spec.task == "regression":
        return [
            {"prediction_id": i, "prediction": value, "score": value}
            for i, value in zip(ids, output.tolist(), strict=True)
        ]
    labels = spec.predicted_labels(output, threshold)
    if spec.task == "binary":
        return [
            {"prediction_id": i, "probability": p, "label": label, "score": p}
            for i, p, label in zip(ids, output.tolist(), labels, strict=True)
        ]
    names = [str(c) for c in spec.classes]
    chosen = np.max(output, axis=1).tolist()
    return [
        {
            "prediction_id": i,
            "label": label,
            "probability": p,
            "probabilities": dict(zip(names, row, strict=True)),
            "score": p,
        }
        for i, label, p, row in zip(ids, labels, chosen, output.tolist(), strict=True)
    ]


class VariantFailed(Exception):
    """The candidate (or a shadow variant) could not score records the champion accepted."""


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the client sent it (without the champion's unknown-category note)."""
    return {k: v for k, v in record.items() if k != UNKNOWN_CATEGORIES_FIELD}


def create_app(settings: Settings | None = None) -> Any:
    """The ASGI app; one per worker process."""
    import random

    import orjson

    from include.continuous_training.rollout_state import (
        MODES,
        DeploymentConflict,
        DeploymentStateError,
        DesiredDeployment,
        Mode,
        canary_bucket,
        entity_key,
    )
    from include.continuous_training.serving.inference_log import InferenceLog
    from include.continuous_training.serving.model_store import ModelStore, ServedModel, Serving
    from include.continuous_training.serving.variants import ShadowJob, ShadowScorer

    settings = settings or load_settings()
    metrics = Metrics(settings.serving_state_dir / "prometheus")

    def on_tick(serving: Serving) -> None:
        metrics.model_version.set(float(serving.champion.version) if serving.champion else 0)
        metrics.candidate_version.set(float(serving.candidate.version) if serving.candidate else 0)
        metrics.deployment_generation.set(serving.generation)

    store = ModelStore(settings, on_tick=on_tick)
    threshold = settings.decision_threshold
    id_column = settings.id_column  # empty: the table has no id column; canary keys on the record itself

    def log_columns() -> list[str]:
        model = store.current
        features = model.spec.feature_names if model else list(settings.feature_columns)
        return [
            "prediction_id",
            "predicted_at",
            "model_version",
            "score",
            "label",
            "variant",  # champion / candidate
            "served",  # did this row's score answer the caller
            "latency_ms",  # this variant's scoring time for the request (encode + predict); null: scored in a batch
            "error",  # why this variant could not score the row (null when it did)
            settings.row_id_column,  # null for a request that sends no id
            UNKNOWN_CATEGORIES_FIELD,
            *features,
        ]

    inference_log = InferenceLog(
        settings, log_columns, on_written=metrics.log_written.inc, on_dropped=metrics.log_dropped.inc
    )

    bound: dict[tuple[str, bool, bool], tuple[Any, Any, Any]] = {}

    def variant_series(variant: str, served: bool, classifier: bool) -> tuple[Any, Any, Any]:
        """``variant``'s request counter (this ``served``), latency and score series, bound once (``.labels()``
        per request costs more than the increment)."""
        key = (variant, served, classifier)
        if key not in bound:
            values = metrics.variant_scores if classifier else metrics.variant_values
            bound[key] = (
                metrics.variant_requests.labels(variant, "true" if served else "false"),
                metrics.variant_latency.labels(variant),
                values.labels(variant),
            )
        return bound[key]

    def observe(variant: str, served: bool, model: ServedModel, scores: list[float], seconds: float) -> None:
        requests, latency, series = variant_series(variant, served, model.spec.is_classifier)
        requests.inc()
        latency.observe(seconds)
        observe_many(series, scores)

    def log_rows(
        records: list[dict[str, Any]],
        predictions: list[dict[str, Any]],
        version: str,
        now: float,
        variant: str,
        served: bool,
        latency_ms: float | None,
    ) -> list[dict[str, Any]]:
        rows = []
        for record, prediction in zip(records, predictions, strict=True):
            rows.append(
                {
                    **record,
                    "prediction_id": prediction["prediction_id"],
                    "predicted_at": now,
                    "model_version": version,
                    "score": prediction.pop("score"),
                    "label": prediction.get("label"),
                    "variant": variant,
                    "served": served,
                    "latency_ms": latency_ms,
                    "error": None,
                }
            )
        return rows

    def error_rows(
        records: list[dict[str, Any]],
        ids: list[str],
        version: str,
        now: float,
        variant: str,
        ms: float | None,
        error: str,
    ) -> list[dict[str, Any]]:
        return [
            {
                **record,
                "prediction_id": prediction_id,
                "predicted_at": now,
                "model_version": version,
                "score": None,
                "label": None,
                "variant": variant,
                "served": False,
                "latency_ms": ms,
                "error": error[:500],
            }
            for record, prediction_id in zip(records, ids, strict=True)
        ]

    def predict_variant(model: ServedModel, matrix: Any, ids: list[str]) -> list[dict[str, Any]]:
        """``model``'s predictions for an encoded matrix; :class:`VariantFailed` when it cannot."""
        try:
            return predictions_of(model.spec, model.spec.predict(model.booster, matrix), threshold, ids)
        except Exception as error:  # whatever a broken model raises, the champion answers instead
            raise VariantFailed(f"version {model.version}: {type(error).__name__}: {error}") from error

    def score_variant(model: ServedModel, records: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
        """``model``'s predictions for records the champion accepted; :class:`VariantFailed` when it cannot."""
        try:
            matrix, errors = encode_records(records, model)
            if errors:
                first = errors[0]
                raise VariantFailed(f"version {model.version} refuses {first['loc']}: {first['msg']}")
            return predictions_of(model.spec, model.spec.predict(model.booster, matrix), threshold, ids)
        except VariantFailed:
            raise
        except Exception as error:  # whatever a broken model raises, the champion answers instead
            raise VariantFailed(f"version {model.version}: {type(error).__name__}: {error}") from error

    def score_off_path(jobs: list[ShadowJob]) -> None:
        """Jobs of one model in the shadow thread: score, count, log (``served=false``).

        The jobs' records are encoded one job at a time (unless the request path's matrix fits). The
        first job is predicted alone and its ``latency_ms`` is its encoding plus that call: one request's
        scoring time, like the champion's. The others are predicted in one call and their
        ``latency_ms`` is null: under load the latency is sampled, never inflated by the batch.
        """
        import numpy as np

        model, variant = jobs[0].model, jobs[0].variant
        encoded: list[tuple[ShadowJob, list[dict[str, Any]], Any, float]] = []
        rows: list[dict[str, Any]] = []

        def failed(job: ShadowJob, records: list[dict[str, Any]], seconds: float | None, error: str) -> None:
            metrics.variant_requests.labels(variant, "false").inc()
            metrics.variant_errors.labels(variant).inc()
            if seconds is not None:
                metrics.variant_latency.labels(variant).observe(seconds)
            ms = seconds * 1000 if seconds is not None else None
            rows.extend(error_rows(records, job.prediction_ids, model.version, job.predicted_at, variant, ms, error))

        for job in jobs:
            records = [_clean(r) for r in job.records]
            if job.matrix is not None:  # encoded on the request path (both variants encode alike)
                encoded.append((job, records, job.matrix, job.encoded_seconds))
                continue
            started = time.perf_counter()
            try:
                matrix, errors = encode_records(records, model)
            except Exception as error:
                failed(job, records, time.perf_counter() - started, f"version {model.version}: {error!r}")
                continue
            if errors:
                first = errors[0]
                message = f"version {model.version} refuses {first['loc']}: {first['msg']}"
                failed(job, records, time.perf_counter() - started, message)
                continue
            encoded.append((job, records, matrix, time.perf_counter() - started))
        # The first job alone, timed: a single request's scoring latency, comparable with the champion's on
        # the request path. The rest in one call: their latency_ms stays null (a batch is not one request).
        for group, timed in ((encoded[:1], True), (encoded[1:], False)):
            if not group:
                continue
            started = time.perf_counter()
            try:
                stacked = np.vstack([matrix for _, _, matrix, _ in group]) if len(group) > 1 else group[0][2]
                output = model.spec.predict(model.booster, stacked)
                ids = [prediction_id for job, _, _, _ in group for prediction_id in job.prediction_ids]
                predictions = predictions_of(model.spec, output, threshold, ids)
            except Exception as error:  # whatever a broken model raises
                predicted = time.perf_counter() - started
                message = f"version {model.version}: {type(error).__name__}: {error}"
                for job, records, _, encoding in group:
                    failed(job, records, encoding + predicted if timed else None, message)
                continue
            predicted = time.perf_counter() - started
            requests, latency, scores = variant_series(variant, False, model.spec.is_classifier)
            requests.inc(len(group))
            at = 0
            for job, records, _, encoding in group:
                part = predictions[at : at + len(records)]
                at += len(records)
                if timed:
                    latency.observe(encoding + predicted)
                observe_many(scores, [prediction["score"] for prediction in part])
                ms = (encoding + predicted) * 1000 if timed else None
                rows.extend(log_rows(records, part, model.version, job.predicted_at, variant, False, ms))
        inference_log.append(rows)

    shadow = ShadowScorer(settings.shadow_queue_size, score_off_path, metrics.shadow_dropped.inc)

    def sampled(serving: Serving) -> bool:
        percent = serving.state.shadow_percent if serving.state else 0.0
        return percent >= 100.0 or (percent > 0.0 and random.random() * 100.0 < percent)  # noqa: S311  # nosec B311

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        store.start()
        inference_log.start()
        shadow.start()
        yield
        shadow.close()
        inference_log.close()
        store.stop()

    app = FastAPI(title="Continuous-training model endpoint", lifespan=lifespan)
    app.state.store = store
    app.state.inference_log = inference_log

    def json_response(payload: Any, status: int = 200) -> Response:
        return Response(content=orjson.dumps(payload), status_code=status, media_type="application/json")

    def deployment_info(serving: Serving) -> dict[str, Any]:
        """What this worker applied, and whether every worker of this replica did."""
        workers = store.workers()
        return {
            **serving.summary(),
            "desired": serving.state.as_dict() if serving.state else None,
            "converged": store.converged(workers),
            "workers": [{k: w.get(k) for k in ("pid", "generation", "mode", "version", "candidate")} for w in workers],
            "last_error": store.last_error,
        }

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "alive"})

    @app.get("/ready")
    async def ready() -> Response:
        model = store.current
        if model is None:
            return json_response({"ready": False, "reason": store.last_error or "no model loaded yet"}, 503)
        return json_response({"ready": True, "model_version": model.version})

    @app.get("/metadata")
    async def metadata() -> Response:
        serving = store.serving
        if serving.champion is None:
            return json_response({"detail": "no model loaded", "deployment": deployment_info(serving)}, 503)
        info = _metadata(settings, serving.champion)
        return json_response({**info, "deployment": deployment_info(serving)})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        metrics.log_buffered.set(inference_log.buffered)
        return Response(content=metrics.render(), media_type="text/plain; version=0.0.4")

    def score(body: bytes) -> tuple[int, bytes]:
        """One /predict call: (status, JSON body). Shared by the route and the raw ASGI fast path."""
        serving = store.serving  # this request finishes on these models even if a swap happens meanwhile
        model = serving.champion
        if model is None:
            return 503, orjson.dumps({"detail": "no model loaded yet"})
        try:
            records, single = parse_records(body, settings)
        except RequestError as error:
            return error.status, orjson.dumps({"detail": error.detail})
        if serving.mode == "canary" and serving.candidate is not None:
            return score_canary(serving, model, serving.candidate, records, single)
        started = time.perf_counter()
        matrix, errors = encode_records(records, model, metrics)
        if errors:
            return 422, orjson.dumps({"detail": errors})
        encoded = time.perf_counter() - started
        spec = model.spec
        output = spec.predict(model.booster, matrix)
        now = time.time()
        predictions = predictions_of(spec, output, threshold)
        seconds = time.perf_counter() - started
        rows = log_rows(records, predictions, model.version, now, "champion", True, seconds * 1000)
        scores = (
            (metrics.scores, metrics.champion_scores)
            if spec.is_classifier
            else (metrics.values, metrics.champion_values)
        )
        values = [row["score"] for row in rows]
        observe_many(scores[0], values)
        observe_many(scores[1], values)
        metrics.predictions.inc(len(records))
        metrics.champion_served.inc()
        metrics.champion_latency.observe(seconds)
        inference_log.append(rows)
        if serving.candidate is not None and sampled(serving):  # shadow: the candidate scores it off the path
            ids = [p["prediction_id"] for p in predictions]
            reuse = matrix if serving.same_encoding else None
            shadow.submit(ShadowJob(serving.candidate, "candidate", records, ids, now, reuse, encoded))
        if single:
            return 200, orjson.dumps({**predictions[0], "model_version": model.version})
        return 200, orjson.dumps({"model_version": model.version, "predictions": predictions})

    def score_canary(
        serving: Serving, champion: ServedModel, candidate: ServedModel, records: list[Any], single: bool
    ) -> tuple[int, bytes]:
        """Canary: the candidate answers the records of its entities; the champion the rest, and any the
        candidate fails on (counted against the candidate, never against the caller)."""
        percent = serving.state.canary_percent if serving.state else 0.0
        routed = [
            isinstance(r, dict) and canary_bucket(entity_key(r, id_column), candidate.version) < percent
            for r in records
        ]
        started = time.perf_counter()
        matrix, errors = encode_records(records, champion, metrics)  # the champion's contract decides a 4xx
        if errors:
            return 422, orjson.dumps({"detail": errors})
        encoded = time.perf_counter() - started
        now = time.time()
        ids = prediction_ids(len(records))
        answers: list[tuple[dict[str, Any], str] | None] = [None] * len(records)
        rows: list[dict[str, Any]] = []
        chosen = [i for i, to_candidate in enumerate(routed) if to_candidate]
        if chosen:
            picked = [_clean(records[i]) for i in chosen]
            picked_ids = [ids[i] for i in chosen]
            began = time.perf_counter()
            try:
                if serving.same_encoding:  # the champion's matrix is the candidate's too: no second encoding
                    began -= encoded  # ...but its latency counts that encoding, as the champion's does
                    predictions = predict_variant(candidate, matrix[chosen], picked_ids)
                else:
                    predictions = score_variant(candidate, picked, picked_ids)
            except VariantFailed as error:
                seconds = time.perf_counter() - began
                metrics.variant_requests.labels("candidate", "false").inc()
                metrics.variant_errors.labels("candidate").inc()
                metrics.variant_latency.labels("candidate").observe(seconds)
                rows += error_rows(picked, picked_ids, candidate.version, now, "candidate", seconds * 1000, str(error))
                chosen = []
            else:
                seconds = time.perf_counter() - began
                observe("candidate", True, candidate, [p["score"] for p in predictions], seconds)
                rows += log_rows(picked, predictions, candidate.version, now, "candidate", True, seconds * 1000)
                for i, prediction in zip(chosen, predictions, strict=True):
                    answers[i] = (prediction, candidate.version)
        rest = [i for i, answer in enumerate(answers) if answer is None]
        if rest:
            began = time.perf_counter()
            output = champion.spec.predict(champion.booster, matrix[rest] if chosen else matrix)
            predictions = predictions_of(champion.spec, output, threshold, [ids[i] for i in rest])
            seconds = encoded + time.perf_counter() - began
            scores = [p["score"] for p in predictions]
            observe("champion", True, champion, scores, seconds)
            observe_many(metrics.scores if champion.spec.is_classifier else metrics.values, scores)
            rows += log_rows(
                [records[i] for i in rest], predictions, champion.version, now, "champion", True, seconds * 1000
            )
            for i, prediction in zip(rest, predictions, strict=True):
                answers[i] = (prediction, champion.version)
        metrics.predictions.inc(len(records))
        inference_log.append(rows)
        if sampled(serving):  # the variant that did not answer scores the same records off the path
            scored_by_champion = [i for i in rest if not routed[i]]  # not those the candidate just failed on
            for model, variant, indices in (
                (champion, "champion", chosen),
                (candidate, "candidate", scored_by_champion),
            ):
                if indices:
                    reuse = matrix[indices] if serving.same_encoding or model is champion else None
                    job_records, job_ids = [records[i] for i in indices], [ids[i] for i in indices]
                    shadow.submit(ShadowJob(model, variant, job_records, job_ids, now, reuse, encoded))
        done = [answer for answer in answers if answer is not None]
        if single:
            prediction, version = done[0]
            return 200, orjson.dumps({**prediction, "model_version": version})
        return 200, orjson.dumps(
            {"model_version": champion.version, "predictions": [{**p, "model_version": v} for p, v in done]}
        )

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        """Score one record (an object) or a batch (an array, or ``{"records": [...]}``)."""
        status, payload = score(await request.body())
        return Response(content=payload, status_code=status, media_type="application/json")

    # -- admin: write the desired deployment every replica follows -----------------------------------
    def authorized(request: Request) -> bool:
        token = settings.serving_admin_token
        given = request.headers.get("authorization", "")
        return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            raise RequestError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError(422, "expected a JSON object")
        return body

    async def write_state(change: Any, wait: bool) -> Response | tuple[Any, list[dict[str, Any]]]:
        """CAS-write the desired deployment; with ``wait``, until every worker of this replica applied it."""
        import asyncio

        try:
            stored = await asyncio.to_thread(store.write, change)
        except DeploymentConflict as error:
            return json_response({"detail": str(error)}, 409)
        except DeploymentStateError as error:
            return json_response({"detail": str(error)}, 422)
        except RequestError as error:
            return json_response({"detail": error.detail}, error.status)
        except Exception as error:  # the store (S3) refused or is unreachable: nothing was written
            return json_response(
                {"detail": f"cannot write the desired deployment: {type(error).__name__}: {error}"}, 503
            )
        if not wait:
            return stored, []
        try:
            workers = await asyncio.to_thread(store.wait_for_state, stored, 120.0)
        except TimeoutError as error:
            return json_response({"detail": str(error), "generation": stored.state.generation}, 504)
        return stored, workers

    async def loaded(version: str, asked: str | None = None) -> Response | None:
        """None when ``version`` loads in this worker (proof before anyone is told to serve it); else a 409
        naming what was ``asked`` for (an alias, or the version)."""
        import asyncio

        try:
            await asyncio.to_thread(store.model, version)
        except Exception as error:
            what = repr(asked or version) + ("" if asked in (None, version) else f" (version {version})")
            return json_response({"detail": f"cannot load {what}: {type(error).__name__}: {error}"}, 409)
        return None

    def who(body: dict[str, Any], default_reason: str) -> tuple[str, str]:
        by, reason = body.get("updated_by", "admin"), body.get("reason", default_reason)
        if not isinstance(by, str) or not isinstance(reason, str):
            raise RequestError(422, "updated_by and reason must be text")
        return by or "admin", reason

    @app.post("/admin/predict")
    async def admin_predict(request: Request) -> Response:
        """Score with one variant, ``?variant=candidate`` (or ``champion``): the smoke test of a candidate
        that takes no traffic yet. Authenticated; the body and the response are those of ``/predict``; not
        written to the inference log (it is not live traffic: drift and rollout analyses never see it)."""
        if not authorized(request):
            return json_response({"detail": "missing or wrong bearer token"}, 401)
        variant = request.query_params.get("variant", "champion")
        if variant not in ("champion", "candidate"):
            return json_response({"detail": f"variant {variant!r}: expected 'champion' or 'candidate'"}, 422)
        serving = store.serving
        model = serving.candidate if variant == "candidate" else serving.champion
        if model is None:
            return json_response({"detail": f"this replica serves no {variant}"}, 409)
        try:
            records, single = parse_records(await request.body(), settings)
        except RequestError as error:
            return json_response({"detail": error.detail}, error.status)
        matrix, errors = encode_records(records, model)
        if errors:
            return json_response({"detail": errors}, 422)
        predictions = predictions_of(model.spec, model.spec.predict(model.booster, matrix), threshold)
        for prediction in predictions:
            prediction.pop("score")
        if single:
            return json_response({**predictions[0], "model_version": model.version})
        return json_response({"model_version": model.version, "predictions": predictions})

    @app.post("/admin/unload")
    async def unload(request: Request) -> Response:
        """Serve nothing (a failed first deployment has no previous model to go back to)."""
        if not authorized(request):
            return json_response({"detail": "missing or wrong bearer token"}, 401)
        try:
            by, reason = who(await json_body(request), "unload")
        except RequestError as error:
            return json_response({"detail": error.detail}, error.status)
        written = await write_state(
            lambda current: DesiredDeployment(champion=None, updated_by=by, reason=reason), wait=True
        )
        if isinstance(written, Response):
            return written
        stored, workers = written
        return json_response({"model_version": None, "workers": len(workers), "generation": stored.state.generation})

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        """Direct deployment: champion := the version (or alias), candidate cleared, on every replica."""
        if not authorized(request):
            return json_response({"detail": "missing or wrong bearer token"}, 401)
        try:
            body = await json_body(request)
            by, reason = who(body, "")
        except RequestError as error:
            return json_response({"detail": error.detail}, error.status)
        target = str(body.get("version") or body.get("alias") or "champion")
        import asyncio

        try:
            version = await asyncio.to_thread(store.resolve, target)
        except Exception as error:
            return json_response({"detail": f"cannot load {target!r}: {type(error).__name__}: {error}"}, 409)
        refused = await loaded(version, target)
        if refused is not None:
            return refused
        written = await write_state(
            lambda current: DesiredDeployment(champion=version, updated_by=by, reason=reason or f"reload {target}"),
            wait=True,
        )
        if isinstance(written, Response):
            return written
        stored, workers = written
        return json_response({"model_version": version, "workers": len(workers), "generation": stored.state.generation})

    rollout_fields = {
        "champion",
        "candidate",
        "mode",
        "canary_percent",
        "shadow_percent",
        "reason",
        "updated_by",
        "expected_generation",
    }

    @app.get("/admin/rollout")
    async def rollout_state(request: Request) -> Response:
        """The desired deployment as stored now, and what this worker applied."""
        if not authorized(request):
            return json_response({"detail": "missing or wrong bearer token"}, 401)
        import asyncio

        try:
            stored = await asyncio.to_thread(store.deployments.read)
        except Exception as error:
            return json_response(
                {"detail": f"cannot read the desired deployment: {type(error).__name__}: {error}"}, 503
            )
        return json_response(
            {
                "stored": {"state": stored.state.as_dict(), "etag": stored.etag} if stored else None,
                "applied": deployment_info(store.serving),
            }
        )

    @app.post("/admin/rollout")
    async def rollout(request: Request) -> Response:
        """Write a new desired deployment (``mode``, ``candidate``, shares; ``champion`` defaults to the
        current one). Every version is proved to load here first; returns the new generation."""
        if not authorized(request):
            return json_response({"detail": "missing or wrong bearer token"}, 401)
        import asyncio

        try:
            body = await json_body(request)
            unknown = sorted(set(body) - rollout_fields)
            if unknown:
                raise RequestError(422, f"unknown field(s) {unknown}; expected some of {sorted(rollout_fields)}")
            by, reason = who(body, "")
            mode = body.get("mode")
            if mode not in MODES:
                raise RequestError(422, f"mode: expected one of {list(MODES)}, got {mode!r}")
            if mode == "canary" and "canary_percent" not in body:
                raise RequestError(422, "canary_percent: required for mode canary")
            expected = body.get("expected_generation")
            if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
                raise RequestError(422, f"expected_generation: expected a whole number, got {expected!r}")
            versions: dict[str, str | None] = {}
            for name in ("champion", "candidate"):
                value = body.get(name)
                if value is None:
                    versions[name] = None
                elif isinstance(value, bool) or not isinstance(value, str | int) or not str(value):
                    raise RequestError(422, f"{name}: expected a version (or an alias), got {value!r}")
                else:
                    try:
                        versions[name] = await asyncio.to_thread(store.resolve, str(value))
                    except Exception as error:
                        raise RequestError(409, f"{name}: cannot resolve {value!r}: {error}") from None
        except RequestError as error:
            return json_response({"detail": error.detail}, error.status)
        for version in versions.values():
            if version is not None:
                refused = await loaded(version)
                if refused is not None:
                    return refused
        fallback_champion = store.current.version if store.current else None

        def change(current: DesiredDeployment | None) -> DesiredDeployment:
            if expected is not None and (current.generation if current else 0) != expected:
                raise DeploymentConflict(
                    f"expected generation {expected}, the stored one is {current.generation if current else 0}"
                )
            champion = versions["champion"] if "champion" in body else None
            if "champion" not in body:
                champion = current.champion if current else fallback_champion
            return DesiredDeployment(
                champion=champion,
                candidate=versions["candidate"],
                mode=cast("Mode", mode),
                canary_percent=body.get("canary_percent", 0.0),
                shadow_percent=body.get("shadow_percent", settings.shadow_percent),
                updated_by=by,
                reason=reason,
            )

        written = await write_state(change, wait=False)
        if isinstance(written, Response):
            return written
        stored, _ = written
        return json_response({"generation": stored.state.generation, "state": stored.state.as_dict()})

    return RequestMetrics(app, metrics, score, settings.serving_max_body_bytes)


def _metadata(settings: Settings, model: Any) -> dict[str, Any]:
    """Version, training time, data manifest and decision record of the served model (cached per version)."""
    cached = _METADATA_CACHE.get(model.version)
    if cached is not None:
        return cached
    from include.continuous_training.features import DECISION_ARTIFACT, MANIFEST_ARTIFACT
    from include.continuous_training.registry import tracking_client

    client = tracking_client(settings)
    info: dict[str, Any] = {"model_name": settings.model_name, "model_version": model.version, "run_id": model.run_id}
    if model.run_id:
        run = client.get_run(model.run_id)
        info["trained_at"] = run.info.start_time
        info["device"] = run.data.tags.get("ct.device")
        for key, artifact in (("data_manifest", MANIFEST_ARTIFACT), ("decision", DECISION_ARTIFACT)):
            try:
                info[key] = _load_json_artifact(model.run_id, artifact)
            except Exception:  # an older run without that artifact
                info[key] = None
    _METADATA_CACHE[model.version] = info
    return info


def _load_json_artifact(run_id: str, path: str) -> Any:
    import mlflow

    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")


_METADATA_CACHE: dict[str, dict[str, Any]] = {}
