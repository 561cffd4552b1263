"""FastAPI app of the serving endpoint.

Routes:

- ``POST /predict``: one record (a JSON object) or a batch (a JSON array, or ``{"records": [...]}``).
  Every record is checked against the served model's feature spec; problems come back as 4xx with
  field-level messages (``loc`` = record index and field), never a 500. The response carries
  ``prediction_id`` and ``model_version``, and what the served model predicts (its ``task``):
  binary ``probability`` (of the positive class) and ``label`` (the class value); multiclass
  ``label``, ``probability`` (of that class) and ``probabilities`` (``{class: p}``); regression
  ``prediction``.
- ``GET /health`` (process alive), ``GET /ready`` (a model is loaded), ``GET /metadata``,
  ``GET /metrics`` (Prometheus, aggregated over all workers).
- ``POST /admin/reload`` with ``{"version": "7"}`` or ``{"alias": "champion"}`` and
  ``Authorization: Bearer <CT_SERVING_ADMIN_TOKEN>``; ``POST /admin/unload`` (serve nothing). Without a
  configured token every admin request is refused with 401.

The request path uses orjson and numpy only: no pandas, no pydantic models per request.
"""

from __future__ import annotations

import hmac
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return bytes(generate_latest(registry))


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


def encode_records(records: list[Any], model: Any, metrics: Metrics | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """The float32 matrix for ``records`` and a list of field-level errors (empty when all valid).

    A categorical value the training window never held is scored as missing (NaN), as training
    encodes it, not refused: the world may have a new channel before the model does. Each one is
    counted per feature (``ct_unknown_category_total{feature=...}`` on ``metrics``) and named in the
    record's :data:`UNKNOWN_CATEGORIES_FIELD` (comma-separated features; the inference log keeps it,
    and the raw value stays logged under its feature, so the drift check sees the new value).
    A wrong type, a missing field or a non-finite number is still an error.
    """
    import numpy as np

    spec = model.spec
    numeric, categorical = spec.numeric, list(spec.categories)
    matrix = np.empty((len(records), len(numeric) + len(categorical)), dtype=np.float32)
    errors: list[dict[str, Any]] = []
    unknown_counts: Counter[str] = Counter()
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            errors.append({"loc": [i], "msg": "expected a JSON object", "type": "type_error"})
            continue
        unknown: list[str] = []
        for j, name in enumerate(numeric):
            value = record.get(name)
            if name not in record:
                errors.append({"loc": [i, name], "msg": "field required", "type": "missing"})
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


def predictions_of(spec: Any, output: Any, threshold: float) -> list[dict[str, Any]]:
    """One response entry per row of the model's output (:meth:`FeatureSpec.predict`), with ``score``:
    the number the inference log keeps (P(positive), P(predicted class), or the prediction).

    Binary: ``probability`` and ``label`` (positive at ``probability >= threshold``); multiclass:
    ``label``, ``probability`` of it and ``probabilities`` per class; regression: ``prediction``.
    """
    import numpy as np

    ids = [uuid.uuid4().hex for _ in range(len(output))]
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


def create_app(settings: Settings | None = None) -> Any:
    """The ASGI app; one per worker process."""
    import orjson

    from include.continuous_training.serving.inference_log import InferenceLog
    from include.continuous_training.serving.model_store import ModelStore

    settings = settings or load_settings()
    metrics = Metrics(settings.serving_state_dir / "prometheus")
    store = ModelStore(settings, on_tick=lambda model: metrics.model_version.set(float(model.version) if model else 0))

    def log_columns() -> list[str]:
        model = store.current
        features = model.spec.feature_names if model else list(settings.feature_columns)
        return [
            "prediction_id",
            "predicted_at",
            "model_version",
            "score",
            "label",
            settings.row_id_column,  # null for a request that sends no id
            UNKNOWN_CATEGORIES_FIELD,
            *features,
        ]

    inference_log = InferenceLog(
        settings, log_columns, on_written=metrics.log_written.inc, on_dropped=metrics.log_dropped.inc
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        store.start()
        inference_log.start()
        yield
        inference_log.close()
        store.stop()

    app = FastAPI(title="Continuous-training model endpoint", lifespan=lifespan)
    app.state.store = store
    app.state.inference_log = inference_log

    def json_response(payload: Any, status: int = 200) -> Response:
        return Response(content=orjson.dumps(payload), status_code=status, media_type="application/json")

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
        model = store.current
        if model is None:
            return json_response({"detail": "no model loaded"}, 503)
        return json_response(_metadata(settings, model))

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        metrics.log_buffered.set(inference_log.buffered)
        return Response(content=metrics.render(), media_type="text/plain; version=0.0.4")

    def score(body: bytes) -> tuple[int, bytes]:
        """One /predict call: (status, JSON body). Shared by the route and the raw ASGI fast path."""
        model = store.current  # this request finishes on this model even if a swap happens meanwhile
        if model is None:
            return 503, orjson.dumps({"detail": "no model loaded yet"})
        try:
            records, single = parse_records(body, settings)
        except RequestError as error:
            return error.status, orjson.dumps({"detail": error.detail})
        matrix, errors = encode_records(records, model, metrics)
        if errors:
            return 422, orjson.dumps({"detail": errors})
        spec = model.spec
        output = spec.predict(model.booster, matrix)
        now = time.time()
        predictions = predictions_of(spec, output, settings.decision_threshold)
        rows = []
        for record, prediction in zip(records, predictions, strict=True):
            score_value = prediction.pop("score")
            rows.append(
                {
                    **record,
                    "prediction_id": prediction["prediction_id"],
                    "predicted_at": now,
                    "model_version": model.version,
                    "score": score_value,
                    "label": prediction.get("label"),
                }
            )
            (metrics.scores if spec.is_classifier else metrics.values).observe(score_value)
        metrics.predictions.inc(len(records))
        inference_log.append(rows)
        if single:
            return 200, orjson.dumps({**predictions[0], "model_version": model.version})
        return 200, orjson.dumps({"model_version": model.version, "predictions": predictions})

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        """Score one record (an object) or a batch (an array, or ``{"records": [...]}``)."""
        status, payload = score(await request.body())
        return Response(content=payload, status_code=status, media_type="application/json")

    def authorized(request: Request) -> bool:
        token = settings.serving_admin_token
        given = request.headers.get("authorization", "")
        return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    @app.post("/admin/unload")
    async def unload(request: Request) -> Response:
        """Serve nothing (a failed first deployment has no previous model to go back to)."""
        if not authorized(request):
            return json_response({"detail": "missing or wrong bearer token"}, 401)
        import asyncio

        store.publish(None)
        try:
            workers = await asyncio.to_thread(store.wait_for_all, None, 60.0)
        except TimeoutError as error:
            return json_response({"detail": str(error)}, 504)
        return json_response({"model_version": None, "workers": len(workers)})

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        if not authorized(request):
            return json_response({"detail": "missing or wrong bearer token"}, 401)
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            return json_response({"detail": "body is not valid JSON"}, 400)
        target = str(body.get("version") or body.get("alias") or "champion") if isinstance(body, dict) else ""
        if not target:
            return json_response({"detail": 'expected {"version": "N"} or {"alias": "name"}'}, 422)
        import asyncio

        try:
            version = await asyncio.to_thread(store.resolve, target)
            await asyncio.to_thread(store.activate, version)  # proves it loads before anyone switches
        except Exception as error:
            return json_response({"detail": f"cannot load {target!r}: {type(error).__name__}: {error}"}, 409)
        store.publish(version)
        try:
            workers = await asyncio.to_thread(store.wait_for_all, version, 120.0)
        except TimeoutError as error:
            return json_response({"detail": str(error)}, 504)
        return json_response({"model_version": version, "workers": len(workers)})

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
