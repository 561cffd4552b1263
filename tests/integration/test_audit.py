"""``make audit`` against a vulnerability feed on loopback.

OSV itself cannot be reached from these machines, so the feed here is a stand-in: a small HTTP server
on 127.0.0.1 that speaks OSV's ``POST /v1/query`` (the request pip-audit sends, the response shape of
https://ossf.github.io/osv-schema/) with advisories the test chooses. Everything else is real: the
real pip-audit over the real ``constraints.txt`` in a subprocess, through ``python -m tools.audit``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


PINS = _pins()
REQUESTS = PINS["requests"]
ADVISORY = {
    "id": "GHSA-test-0001-0001",
    "aliases": ["CVE-2099-0001"],
    "summary": "Test advisory: requests leaks the Authorization header on redirect",
    "affected": [
        {
            "package": {"name": "requests", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "99.0.0"}]}],
        }
    ],
}


class FakeOsv:
    """OSV's query endpoint: ``advisories[(name, version)]`` is answered, ``broken`` packages get a 500."""

    def __init__(self) -> None:
        self.advisories: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.broken: set[str] = set()
        self.queried: list[tuple[str, str]] = []
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/v1/query":  # some other web server's page
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.end_headers()
                    self.wfile.write(b"<html>sign in</html>")
                    return
                query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = (query["package"]["name"], query["version"])
                feed.queried.append(key)
                if key[0] in feed.broken:
                    self.send_response(500)
                    self.end_headers()
                    return
                vulns = feed.advisories.get(key)
                body = json.dumps({"vulns": vulns} if vulns else {}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/query"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feed() -> Iterator[FakeOsv]:
    server = FakeOsv()
    try:
        yield server
    finally:
        server.close()


def audit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CT_AUDIT_REQUIRED", "CT_OSV_URL")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tools.audit", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
        check=False,
    )


def _pyproject(tmp_path: Path, ignore: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(f"[tool.continuous_training.audit]\nignore = [\n{ignore}\n]\n")
    return path


def test_clean_feed_audits_every_pin(feed: FakeOsv) -> None:
    result = audit("--osv-url", feed.url, "--require")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK: {len(PINS)} pins" in result.stdout
    # every pin of constraints.txt was asked about, at its pinned version (plus the reachability probe)
    assert {(name, version) for name, version in PINS.items()} <= set(feed.queried)


def test_known_vulnerability_fails_the_audit_and_says_what_to_do(feed: FakeOsv) -> None:
    feed.advisories[("requests", REQUESTS)] = [ADVISORY]
    result = audit("--osv-url", feed.url, "--require")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "FAILED: 1 known vulnerability in" in out
    assert f"requests=={REQUESTS}" in out
    assert "GHSA-test-0001-0001" in out
    assert "CVE-2099-0001" in out
    assert "fixed in: 99.0.0" in out
    assert "leaks the Authorization header" in out


def test_accepted_finding_needs_a_reason_and_expires(feed: FakeOsv, tmp_path: Path) -> None:
    feed.advisories[("requests", REQUESTS)] = [ADVISORY]
    # matched by an alias, with a reason, until a date
    pyproject = _pyproject(
        tmp_path,
        '{ id = "CVE-2099-0001", package = "requests", reason = "we never follow redirects", until = 2030-01-31 },',
    )
    accepted = audit("--osv-url", feed.url, "--require", "--pyproject", str(pyproject), "--today", "2030-01-31")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "accepted until 2030-01-31: requests CVE-2099-0001: we never follow redirects" in accepted.stdout
    assert "(1 accepted)" in accepted.stdout

    expired = audit("--osv-url", feed.url, "--require", "--pyproject", str(pyproject), "--today", "2030-02-01")
    assert expired.returncode == 1, expired.stdout + expired.stderr
    assert "EXPIRED acceptance (2030-01-31)" in expired.stdout
    assert "FAILED: 1 known vulnerability in" in expired.stdout

    # an acceptance for another package does not hide this one
    other = _pyproject(
        tmp_path, '{ id = "CVE-2099-0001", package = "urllib3", reason = "not this one", until = 2030-01-31 },'
    )
    assert audit("--osv-url", feed.url, "--pyproject", str(other), "--today", "2030-01-01").returncode == 1


def test_feed_that_fails_mid_audit_is_an_error_not_a_pass(feed: FakeOsv) -> None:
    feed.broken.add("requests")
    result = audit("--osv-url", feed.url, "--require")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "dependency audit: ERROR" in result.stderr
    assert "OK" not in result.stdout


def test_unreachable_feed_is_skipped_loudly_or_fails_when_required(feed: FakeOsv) -> None:
    # a URL that answers, but not as an OSV feed, is not a feed either
    not_osv = audit("--osv-url", feed.url.replace("/v1/query", "/login"), "--require")
    assert not_osv.returncode == 3
    assert "did not answer JSON" in not_osv.stderr

    url = feed.url
    feed.close()  # nothing listens there now
    skipped = audit("--osv-url", url)
    assert skipped.returncode == 0
    assert "dependency audit: SKIPPED" in skipped.stdout
    assert "Nothing was checked" in skipped.stdout
    assert "OK" not in skipped.stdout

    required = audit(env={"CT_OSV_URL": url, "CT_AUDIT_REQUIRED": "1"})
    assert required.returncode == 3
    assert f"FAILED: no vulnerability feed: {url} unreachable" in required.stderr


def test_malformed_acceptance_is_a_configuration_error(feed: FakeOsv, tmp_path: Path) -> None:
    cases = {
        '{ id = "X", package = "requests", until = 2030-01-31 },': "'reason' is required",
        '{ id = "X", package = "requests", reason = "r" },': "'until' is required",
        '{ id = "X", package = "requests", reason = "r", until = "soon" },': "must be a date",
        '{ id = "X", package = "requests", reason = "r", until = 2030-01-31, by = "me" },': "unknown keys ['by']",
    }
    for ignore, message in cases.items():
        result = audit("--osv-url", feed.url, "--pyproject", str(_pyproject(tmp_path, ignore)))
        assert result.returncode == 2, ignore
        assert message in result.stderr, (ignore, result.stderr)
    assert feed.queried == []  # a bad configuration stops before anything is asked
