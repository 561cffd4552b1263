"""The serving endpoint as a client sees it: real process, real HTTP, real MLflow model, real S3 log."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import secrets
import time
import uuid

import pandas as pd
import pytest

from devtools.datasets import BatchSpec, generate_batch
from devtools.services import free_port
from include.continuous_training.config import load_settings
from include.continuous_training.registry import promote_champion, register_challenger, tracking_client
from include.continuous_training.training import assemble_training_data, train_challenger
from tests.integration.conftest import Endpoint, land_and_curate

FEATURES = list(load_settings({}).feature_columns)


@pytest.fixture(scope="module")
def champion(services, tmp_path_factory):
    """One trained, registered and promoted model under a model name of its own."""
    from include.continuous_training.config import load_settings
    from include.continuous_training.storage import s3_client

    suffix = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(load_settings(), model_name=f"serve-{suffix}", mlflow_experiment=f"serve-{suffix}")
    s3 = s3_client(settings)
    land_and_curate(s3, settings, {f"serve-{suffix}.parquet": generate_batch(BatchSpec(rows=4000, seed=41))})
    model = train_challenger(s3, settings, assemble_training_data(s3, settings), dag_run_id=f"serve-{suffix}")
    client = tracking_client(settings)
    promote_champion(client, settings, register_challenger(client, settings, model["run_id"], model["model_id"], {}))
    return settings


def _endpoint(champion, tmp_path, **overrides) -> Endpoint:
    env = {"CT_MODEL_NAME": champion.model_name, "CT_SERVING_ADMIN_TOKEN": secrets.token_urlsafe(16), **overrides}
    endpoint = Endpoint.start(tmp_path / "serving", env)
    deadline = time.monotonic() + 60
    while endpoint.served_version() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return endpoint


@pytest.fixture(scope="module")
def endpoint(champion, tmp_path_factory):
    ep = _endpoint(champion, tmp_path_factory.mktemp("endpoint"), CT_INFERENCE_FLUSH_SECONDS="1")
    yield ep
    ep.stop()


def _good(**changes):
    record = {
        "amount": 42.5,
        "card_age_days": 300,
        "hour_of_day": 14,
        "distance_from_home_km": 3.2,
        "transactions_last_24h": 2,
        "merchant_risk_score": 0.3,
        "merchant_category": "grocery",
        "channel": "pos",
        "country": "US",
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def test_one_record_and_a_batch(endpoint):
    status, single = endpoint.post("/predict", _good())
    assert status == 200
    assert set(single) == {"prediction_id", "probability", "label", "model_version"}
    assert 0.0 <= single["probability"] <= 1.0
    assert single["label"] == int(single["probability"] >= 0.5)
    assert single["model_version"] == "1"

    status, batch = endpoint.post("/predict", {"records": [_good(), _good(channel="online", amount=900.0)]})
    assert status == 200
    assert len(batch["predictions"]) == 2
    assert batch["predictions"][0]["probability"] == pytest.approx(single["probability"], abs=1e-7)


@pytest.mark.parametrize(
    ("case", "body", "raw", "status", "where"),
    [
        ("missing field", _good(amount=...), None, 422, [0, "amount"]),
        ("string for a number", _good(amount="12"), None, 422, [0, "amount"]),
        ("bool for a number", _good(hour_of_day=True), None, 422, [0, "hour_of_day"]),
        ("null for a number", _good(card_age_days=None), None, 422, [0, "card_age_days"]),
        ("unknown category", _good(channel="carrier_pigeon"), None, 422, [0, "channel"]),
        ("number for a category", _good(country=44), None, 422, [0, "country"]),
        ("second record bad", [_good(), _good(merchant_category="casino")], None, 422, [1, "merchant_category"]),
        ("record not an object", [1, 2, 3], None, 422, [0]),
        ("empty batch", [], None, 422, None),
        ("top level a number", 7, None, 422, None),
        ("oversized batch", [_good()] * 1001, None, 413, None),
        ("non-JSON body", None, b"amount=12&channel=pos", 400, None),
        ("NaN literal", None, b'{"amount": NaN}', 400, None),
        ("infinity", None, b'{"amount": 1e999}', None, None),
        ("body over the limit", None, b'{"pad": "' + b"x" * 1_100_000 + b'"}', 413, None),
    ],
)
def test_bad_requests_get_field_level_4xx_never_500(endpoint, case, body, raw, status, where):
    got, payload = endpoint.post("/predict", body, raw=raw)
    assert 400 <= got < 500, f"{case}: HTTP {got} {payload}"
    if status is not None:
        assert got == status, f"{case}: {payload}"
    if where is not None:
        assert where in [error["loc"] for error in payload["detail"]], payload


def test_admin_routes_need_the_token(endpoint):
    assert endpoint.post("/admin/reload", {"version": "1"})[0] == 401
    assert endpoint.post("/admin/reload", {"version": "1"}, token="wrong")[0] == 401
    assert endpoint.post("/admin/unload", {}, token="wrong")[0] == 401
    assert endpoint.served_version() == "1"
    status, payload = endpoint.post("/admin/reload", {"alias": "champion"}, token=endpoint.token)
    assert (status, payload) == (200, {"model_version": "1", "workers": 2})


def test_health_ready_metadata(endpoint):
    assert endpoint.get("/health") == (200, {"status": "alive"})
    assert endpoint.get("/ready") == (200, {"ready": True, "model_version": "1"})
    status, metadata = endpoint.get("/metadata")
    assert status == 200
    assert metadata["model_version"] == "1"
    assert metadata["data_manifest"]["label"] == "is_fraud"


def test_every_prediction_is_logged_to_s3(endpoint, champion, s3):
    marker = 123.456  # an amount no other test sends
    for _ in range(7):
        assert endpoint.post("/predict", _good(amount=marker))[0] == 200
    deadline = time.monotonic() + 20
    rows = pd.DataFrame()
    while time.monotonic() < deadline:
        keys = [
            o["Key"] for o in s3.list_objects_v2(Bucket=champion.s3_bucket, Prefix="inference/").get("Contents", [])
        ]
        frames = [
            pd.read_parquet(io.BytesIO(s3.get_object(Bucket=champion.s3_bucket, Key=k)["Body"].read())) for k in keys
        ]
        rows = pd.concat(frames) if frames else pd.DataFrame()
        if len(rows) and (rows["amount"] == marker).sum() >= 7:
            break
        time.sleep(0.5)
    mine = rows[rows["amount"] == marker]
    assert len(mine) == 7
    assert set(FEATURES) <= set(mine.columns)
    assert set(mine["model_version"]) == {"1"}
    assert mine["prediction_id"].is_unique
    assert mine["score"].between(0, 1).all()


def test_metrics_count_requests_by_route_and_code(endpoint):
    endpoint.post("/predict", _good(channel="nope"))
    text = endpoint.metrics()
    assert re.search(r'ct_http_requests_total\{code="422",route="/predict"\} [1-9]', text)
    assert re.search(r'ct_http_requests_total\{code="200",route="/predict"\} [1-9]', text)
    assert "ct_http_request_seconds_bucket" in text
    assert "ct_prediction_score_bucket" in text
    assert re.search(r'ct_model_version\{pid="\d+"\} 1.0', text)


def _counter(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


def test_s3_outage_keeps_serving_and_counts_dropped_rows(champion, tmp_path):
    dead_s3 = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    endpoint = _endpoint(
        champion,
        tmp_path,
        CT_S3_ENDPOINT_URL=dead_s3,
        CT_INFERENCE_BUFFER_ROWS="20",
        CT_INFERENCE_FLUSH_ROWS="5",
        CT_INFERENCE_FLUSH_SECONDS="0.2",
    )
    try:
        statuses = [endpoint.post("/predict", _good())[0] for _ in range(80)]
        assert set(statuses) == {200}
        time.sleep(1)
        text = endpoint.metrics()
        dropped, written = (
            _counter(text, "ct_inference_log_rows_dropped_total"),
            _counter(text, "ct_inference_log_rows_written_total"),
        )
        assert written == 0
        assert 80 - 2 * 20 <= dropped <= 80, text  # at most one full buffer per worker kept
        assert endpoint.get("/ready")[0] == 200
    finally:
        endpoint.stop()


# -- hostile clients (issue: reliability) -----------------------------------------------------------
def _raw_request(endpoint: Endpoint, head: bytes, body_chunks, timeout: float = 10.0) -> tuple[int | None, float]:
    """Send a request by hand over a socket; (status or None if the server closed first, seconds)."""
    import socket

    host, port = endpoint.url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(head)
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: what we want for an oversized body
        try:
            reply = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    match = re.match(rb"HTTP/1\.1 (\d{3})", reply)
    return (int(match.group(1)) if match else None), time.monotonic() - started


def test_a_50_mb_body_is_refused_without_reading_it_all_and_the_endpoint_stays_up(endpoint):
    size = 50 * 1024 * 1024
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    chunk = b"[" + b"1," * (512 * 1024)  # 1 MiB of a never-ending JSON array
    status, seconds = _raw_request(endpoint, head, (chunk for _ in range(50)))
    assert status in (413, None), status  # 413, or the connection closed on us
    assert seconds < 30
    assert endpoint.post("/predict", _good())[0] == 200


def test_deeply_nested_json_is_a_400_not_a_crash(endpoint):
    nested = b"[" * 100_000 + b"]" * 100_000
    status, payload = endpoint.post("/predict", raw=nested[: 1024 * 1024 - 1])
    assert status == 400, payload
    status, payload = endpoint.post("/predict", raw=b'{"records": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert status in (400, 422), payload
    assert endpoint.post("/predict", _good())[0] == 200


def test_slow_clients_do_not_starve_the_others(endpoint):
    """Slowloris, bounded: 100 connections trickle headers; a normal client is still served fast."""
    import socket

    host, port = endpoint.url.removeprefix("http://").split(":")
    slow = []
    try:
        for _ in range(100):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        for _ in range(3):  # keep trickling one header line at a time
            for sock in slow:
                with contextlib.suppress(OSError):  # the server may close a slow connection: allowed
                    sock.sendall(b"X-Slow: 1\r\n")
            started = time.monotonic()
            status, _ = endpoint.post("/predict", _good())
            assert status == 200
            assert time.monotonic() - started < 2.0
            time.sleep(0.5)
    finally:
        for sock in slow:
            sock.close()
    assert endpoint.get("/health")[0] == 200
