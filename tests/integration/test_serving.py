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
from tests.integration.conftest import Endpoint, land_and_curate, register_copy_of_version

FEATURES = list(load_settings({}).feature_columns)


@pytest.fixture(scope="module")
def trained(services, tmp_path_factory):
    """One trained, registered and promoted model under a model name of its own, and its training data."""
    from include.continuous_training.config import load_settings
    from include.continuous_training.storage import s3_client

    suffix = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(load_settings(), model_name=f"serve-{suffix}", mlflow_experiment=f"serve-{suffix}")
    s3 = s3_client(settings)
    land_and_curate(s3, settings, {f"serve-{suffix}.parquet": generate_batch(BatchSpec(rows=4000, seed=41))})
    data = assemble_training_data(s3, settings)
    model = train_challenger(s3, settings, data, dag_run_id=f"serve-{suffix}")
    client = tracking_client(settings)
    promote_champion(client, settings, register_challenger(client, settings, model["run_id"], model["model_id"], {}))
    return settings, data


@pytest.fixture(scope="module")
def champion(trained):
    return trained[0]


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
        ("number for a category", _good(country=44), None, 422, [0, "country"]),
        ("second record bad", [_good(), _good(merchant_category=7)], None, 422, [1, "merchant_category"]),
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
    assert endpoint.post("/predict", _good())[0] == 200, f"{case}: the endpoint stopped serving"


def _admin(endpoint: Endpoint, path: str, authorization: str | None) -> int:
    """POST an admin route with exactly this ``Authorization`` header (None: no header); the status."""
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"} | ({"Authorization": authorization} if authorization else {})
    request = urllib.request.Request(endpoint.url + path, data=b'{"version": "1"}', headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_admin_routes_need_the_token(endpoint):
    assert endpoint.post("/admin/reload", {"version": "1"})[0] == 401
    assert endpoint.post("/admin/reload", {"version": "1"}, token="wrong")[0] == 401
    assert endpoint.post("/admin/unload", {}, token="wrong")[0] == 401
    assert _admin(endpoint, "/admin/unload", endpoint.token) == 401  # the token without "Bearer "
    assert _admin(endpoint, "/admin/unload", f"Bearer {endpoint.token}x") == 401
    assert endpoint.served_version() == "1"
    status, payload = endpoint.post("/admin/reload", {"alias": "champion"}, token=endpoint.token)
    assert status == 200, payload
    assert (payload["model_version"], payload["workers"]) == ("1", 2)
    assert payload["generation"] >= 1  # written to the desired deployment every replica follows


def test_with_no_token_configured_every_admin_call_is_refused(champion, tmp_path):
    """``CT_SERVING_ADMIN_TOKEN`` unset (empty counts as unset): no header, an empty bearer, any token → 401."""
    import os

    endpoint = Endpoint.start(
        tmp_path / "serving", {"CT_MODEL_NAME": champion.model_name, "CT_SERVING_ADMIN_TOKEN": ""}, workers=1
    )
    try:
        deadline = time.monotonic() + 60
        while endpoint.served_version() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert endpoint.served_version() == "1"
        others = [os.environ.get("CT_SERVING_ADMIN_TOKEN"), "", "None", "null"]  # the test stack's token too
        for path in ("/admin/unload", "/admin/reload"):
            for authorization in [None, "Bearer", "Bearer ", *(f"Bearer {t}" for t in others if t is not None)]:
                assert _admin(endpoint, path, authorization) == 401, (path, authorization)
        assert endpoint.served_version() == "1", "a refused admin call changed what is served"
        assert endpoint.post("/predict", _good())[0] == 200
    finally:
        endpoint.stop()


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


def _logged_rows(s3, champion, amount: float, count: int) -> pd.DataFrame:
    """The inference-log rows with this ``amount`` (a marker), once ``count`` of them reached S3."""
    deadline = time.monotonic() + 30
    rows = pd.DataFrame()
    while time.monotonic() < deadline:
        keys = [
            o["Key"] for o in s3.list_objects_v2(Bucket=champion.s3_bucket, Prefix="inference/").get("Contents", [])
        ]
        frames = [
            pd.read_parquet(io.BytesIO(s3.get_object(Bucket=champion.s3_bucket, Key=k)["Body"].read())) for k in keys
        ]
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if len(rows) and (rows["amount"] == amount).sum() >= count:
            break
        time.sleep(0.5)
    return rows[rows["amount"] == amount] if len(rows) else rows


def test_an_unseen_category_is_scored_as_missing_counted_logged_and_seen_by_the_drift_check(endpoint, champion, s3):
    """A channel the training window never held: 200 (scored as training scores a missing value), counted per
    feature, flagged in the log with the raw value kept, and the drift check sees the new value."""
    from include.continuous_training.drift import compute_drift, load_reference, read_inference_window
    from include.continuous_training.registry import load_model

    marker = 777.125  # an amount no other test sends
    before = endpoint.metrics()
    status, payload = endpoint.post("/predict", {"records": [_good(amount=marker, channel="carrier_pigeon")] * 300})
    assert status == 200, payload
    assert endpoint.post("/predict", _good(amount=marker, channel="drone", country="Atlantis"))[0] == 200

    model = load_model(f"models:/{champion.model_name}/1")
    as_missing = model.booster.inplace_predict(
        model.spec.matrix(pd.DataFrame([_good(amount=marker, channel="carrier_pigeon")]))
    )
    assert "carrier_pigeon" not in model.spec.categories["channel"]
    assert payload["predictions"][0]["probability"] == pytest.approx(float(as_missing[0]), abs=1e-6)

    def unknown(text: str, feature: str) -> float:
        match = re.search(rf'^ct_unknown_category_total\{{feature="{feature}"\}} (\S+)$', text, re.M)
        return float(match.group(1)) if match else 0.0

    after = endpoint.metrics()
    assert unknown(after, "channel") - unknown(before, "channel") == 301
    assert unknown(after, "country") - unknown(before, "country") == 1

    rows = _logged_rows(s3, champion, marker, 301)
    assert len(rows) == 301
    assert rows["ct_unknown_categories"].value_counts().to_dict() == {"channel": 300, "channel,country": 1}
    assert set(rows["channel"]) == {"carrier_pigeon", "drone"}  # the raw values, not NaN

    now = pd.Timestamp.now(tz="UTC")
    window = read_inference_window(s3, champion, now - pd.Timedelta(hours=1), now + pd.Timedelta(minutes=1))
    reference, _, champion_model = load_reference(champion)
    summary, _ = compute_drift(reference, window[window["amount"] == marker], champion_model, champion)
    assert "channel" in summary["drifted_features"], summary["columns"]["channel"]


def test_metrics_count_requests_by_route_and_code(endpoint):
    endpoint.post("/predict", _good(channel=None))
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
        # Each worker keeps at most its 20-row buffer, so at least 80 - 2 * 20 are dropped; and the
        # worker that got at least half the requests keeps a full buffer, so at most 80 - 20 are.
        assert 80 - 2 * 20 <= dropped <= 80 - 20, text
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


def test_a_50_mb_body_gets_a_413_after_at_most_1_mib_is_read_and_the_rest_is_never_read(endpoint):
    """A slow sender with a small send buffer, so that what the kernels buffer stays small: the 413 must
    arrive while the body is still being sent, after the server read at most the limit plus one network
    read (its own count, in the answer), and the server then closes instead of reading the other ~49 MB."""
    import select
    import socket

    limit = load_settings({}).serving_max_body_bytes  # the endpoint runs with the default limit
    size = 50 * 1024 * 1024
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    chunk = b"[" + b"1," * (8 * 1024)  # 16 KiB of a never-ending JSON array
    host, port = endpoint.url.removeprefix("http://").split(":")
    sent, sent_when_answered, reply = 0, None, b""
    refused: Exception | None = None  # how the connection ended, if the server ended it
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        sock.settimeout(10)
        sock.connect((host, int(port)))
        sock.sendall(head)
        deadline = time.monotonic() + 60
        while sent < size and time.monotonic() < deadline:
            if sent_when_answered is None and select.select([sock], [], [], 0)[0]:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError as error:
                    data, refused = b"", error
                reply += data
                if b"\r\n\r\n" in reply or not data:
                    sent_when_answered = sent
                if not data:  # closed by the server
                    refused = refused or EOFError("the server closed the connection")
                    break
            try:
                sent += sock.send(chunk[: size - sent])  # never more than the declared length
            except (BrokenPipeError, ConnectionResetError) as error:
                refused = error
                break
            except TimeoutError:
                break  # the server stopped reading but kept the connection: the assertions below say so
            time.sleep(0.001)  # slow: the server reads as fast as we send, nothing piles up in buffers
        with contextlib.suppress(OSError):
            reply += sock.recv(65536)  # the rest of the answer, if it came in two pieces
    match = re.match(rb"HTTP/1\.1 (\d{3})", reply)
    assert match is not None, f"no HTTP answer before the connection ended ({sent} bytes sent)"
    assert int(match.group(1)) == 413, reply
    import orjson

    head_part, rest = reply.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head_part).group(1))  # type: ignore[union-attr]
    bytes_read = orjson.loads(rest[:length])["bytes_read"]
    # One message from uvicorn holds at most one 256 KiB socket read on top of its 64 KiB buffer.
    assert limit < bytes_read <= limit + 320 * 1024, bytes_read
    assert sent_when_answered is not None
    assert sent_when_answered < 8 * 1024 * 1024, f"the 413 came only after {sent_when_answered} bytes were sent"
    assert refused is not None, f"the server went on reading after its 413: {sent} of {size} bytes accepted"
    assert sent < 8 * 1024 * 1024, f"{sent} bytes accepted before the connection was closed"
    assert endpoint.post("/predict", _good())[0] == 200


def test_deeply_nested_json_is_a_400_not_a_crash(endpoint):
    nested = b"[" * 100_000 + b"]" * 100_000
    status, payload = endpoint.post("/predict", raw=nested[: 1024 * 1024 - 1])
    assert status == 400, payload
    status, payload = endpoint.post("/predict", raw=b'{"records": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert status == 400, payload  # also too deep for orjson: refused while parsing, not as a bad record
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


# -- no pickle is ever loaded (issue 14) ------------------------------------------------------------
class _Tripwire:
    """Unpickling this creates ``marker``: proof that something unpickled it."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return Path.touch, (Path(self.marker),)


def _register_copy_of_champion(settings, s3, name: str, change) -> str:
    """A new version of the served model whose artifacts are a copy of version 1's, passed through
    ``change(files: dict[relative path, bytes]) -> dict``; registered without alias. Its version."""
    return register_copy_of_version(settings, s3, "1", name, change)


def _ubj_replaced_by_a_pickle(payload: bytes):
    return lambda files: {**files, "model.ubj": payload}


def _only_a_pickled_pyfunc_model(payload: bytes):
    mlmodel = (
        b"artifact_path: model\n"
        b"flavors:\n"
        b"  python_function:\n"
        b"    loader_module: mlflow.sklearn\n"
        b"    model_path: model.pkl\n"
        b"    python_version: 3.11.0\n"
        b"  sklearn:\n"
        b"    pickled_model: model.pkl\n"
        b"    serialization_format: pickle\n"
    )

    def change(files):
        kept = {k: v for k, v in files.items() if k.startswith("extra_files/")}  # the feature spec stays
        return {**kept, "MLmodel": mlmodel, "model.pkl": payload}

    return change


@pytest.mark.parametrize(
    "tamper", [_ubj_replaced_by_a_pickle, _only_a_pickled_pyfunc_model], ids=["model.ubj-is-a-pickle", "model.pkl-only"]
)
def test_a_pickled_model_is_refused_and_never_unpickled(endpoint, champion, s3, tmp_path, tamper):
    import pickle

    from include.continuous_training.registry import load_model

    live = tmp_path / "live-pickle"
    pickle.loads(pickle.dumps(_Tripwire(live)))  # the payload really does something when unpickled
    assert live.exists()
    marker = tmp_path / "unpickled"
    version = _register_copy_of_champion(champion, s3, tamper.__name__, tamper(pickle.dumps(_Tripwire(marker))))

    with pytest.raises(Exception) as refused:  # noqa: PT011 -- any refusal; what matters is the marker
        load_model(f"models:/{champion.model_name}/{version}")
    assert not marker.exists(), "registry.load_model unpickled an artifact"

    status, payload = endpoint.post("/admin/reload", {"version": version}, token=endpoint.token)
    assert status == 409, payload
    assert f"cannot load '{version}'" in payload["detail"]
    assert not marker.exists(), "the endpoint unpickled an artifact"
    assert endpoint.served_version() == "1"
    status, answer = endpoint.post("/predict", _good())
    assert (status, answer["model_version"]) == (200, "1")
    print(f"\nrefused: {type(refused.value).__name__}: {refused.value}")


# -- the smoke test's default latency budget (every other test relaxes it: tests/conftest.py) -------
def test_the_default_p99_budget_is_what_the_smoke_test_uses_and_a_real_endpoint_meets_it(
    endpoint, trained, s3, monkeypatch
):
    from include.continuous_training.config import Settings, runtime_settings
    from include.continuous_training.deployment import run_smoke_test

    monkeypatch.delenv("CT_SMOKE_P99_MS")  # nothing overrides it: the default applies
    settings, data = trained
    defaults = runtime_settings()  # what the DAG's smoke_test task reads (task_settings)
    assert defaults.smoke_p99_ms == Settings().smoke_p99_ms == 250.0  # the README's documented default
    settings = dataclasses.replace(
        settings, serving_url=endpoint.url, smoke_p99_ms=defaults.smoke_p99_ms, smoke_requests=100
    )
    for _ in range(3):  # a shared 2-core machine can stall a few requests; the default must be met once in 3
        report = run_smoke_test(s3, settings, data, "1")
        if report.passed:
            break
    assert report.passed, report.reason()
    assert report.p99_budget_ms == 250.0
    assert (report.requests, report.errors) == (100, 0)
    assert report.max_abs_diff <= 1e-6

    impossible = run_smoke_test(s3, dataclasses.replace(settings, smoke_p99_ms=0.001), data, "1")
    assert not impossible.passed
    assert impossible.reason().startswith("p99 latency"), impossible.reason()


def test_explain_gives_contributions_that_add_up_to_the_prediction(endpoint):
    import math

    record = _good(amount=900.0, channel="online", distance_from_home_km=400.0)
    assert endpoint.post("/explain", record)[0] == 401  # authenticated unless CT_EXPLAIN_PUBLIC
    status, explained = endpoint.post("/explain", record, token=endpoint.token)
    assert status == 200, explained
    assert set(explained["contributions"]) == set(FEATURES)
    sizes = [abs(v) for v in explained["contributions"].values()]
    assert sizes == sorted(sizes, reverse=True)  # the biggest reason first
    margin = explained["base_value"] + sum(explained["contributions"].values())
    _, predicted = endpoint.post("/predict", record)
    assert 1 / (1 + math.exp(-margin)) == pytest.approx(predicted["probability"], abs=1e-5)
    assert explained["probability"] == pytest.approx(predicted["probability"], abs=1e-7)
    # the same checks as /predict; one record only
    status, refused = endpoint.post("/explain", _good(amount="12"), token=endpoint.token)
    assert status == 422
    assert refused["detail"][0]["loc"] == [0, "amount"]
    assert endpoint.post("/explain", {"records": [record]}, token=endpoint.token)[0] == 422
