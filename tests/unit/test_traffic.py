"""devtools.traffic's background clients: paced, counting every answer, stopping when told."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devtools.traffic import BackgroundTraffic


class _Predict(BaseHTTPRequestHandler):
    """``/predict`` that answers v1, and 500 for a record with ``"fail": true``."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the endpoint does

    def do_POST(self) -> None:
        record = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        seen.append(record["n"])
        status = 500 if record.get("fail") else 200
        body = json.dumps({"prediction_id": f"p{len(seen)}", "model_version": "1"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


seen: list[int] = []


@pytest.fixture
def endpoint():
    seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Predict)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_background_traffic_is_paced_round_robin_and_counts_every_answer(endpoint):
    records = [{"n": 0}, {"n": 1}, {"n": 2, "fail": True}]
    answers: list[tuple[int, list[str]]] = []
    with BackgroundTraffic(
        endpoint, records, rate=40, concurrency=2, on_answer=lambda *a: answers.append(a)
    ) as traffic:
        time.sleep(1.0)
    report = traffic.report
    assert 25 <= report.requests <= 60  # about 40 in one second: paced, not as fast as the server answers
    assert report.requests == len(seen)
    counts = [seen.count(n) for n in (0, 1, 2)]
    assert max(counts) - min(counts) <= 2, counts  # every record in turn (two threads: arrival order may swap)
    assert report.statuses[500] == seen.count(2)
    assert report.failed == seen.count(2) > 0
    assert report.versions == {"1": report.ok}
    assert len(report.prediction_ids) == report.ok
    assert sorted(pid for _, ids in answers for pid in ids) == sorted(report.prediction_ids)
    assert {first for first, _ in answers} == {0, 1}  # the failed record (index 2) was not answered
    after = len(seen)
    time.sleep(0.2)
    assert len(seen) == after  # stopped means stopped


def test_background_traffic_refuses_nothing_to_send():
    with pytest.raises(ValueError, match="at least one record"):
        BackgroundTraffic("http://127.0.0.1:1", [])
