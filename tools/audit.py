"""``make audit``: every pinned dependency checked against a vulnerability feed (pip-audit + OSV).

What it audits is ``constraints.txt``, the full pin set (runtime and dev) that ``make venv``, the
Dockerfile and CI install, so nothing is resolved or installed to audit it. pip-audit asks OSV about
each pin; this wrapper adds what a CI gate needs and pip-audit leaves out:

* **No vacuous pass.** A feed that cannot be reached is not "0 vulnerabilities". The feed is probed
  first; unreachable prints ``dependency audit: SKIPPED`` with the reason and exits 0, or exits 3 with
  ``--require`` (``CT_AUDIT_REQUIRED=1``) — set that wherever the feed is reachable, so a network fault
  cannot turn the gate green. Any other failure to audit (a pin that cannot be read, a feed error)
  exits 2.
* **Accepted findings carry a reason and an expiry.** ``[tool.continuous_training.audit]`` in
  ``pyproject.toml`` lists them::

      ignore = [
        { id = "GHSA-xxxx-xxxx-xxxx", package = "somepkg",
          reason = "we never call the affected API", until = 2027-01-31 },
      ]

  An entry without a reason is a configuration error (exit 2); an expired one stops applying, so the
  finding fails the audit again. A finding is matched by any of its ids (OSV id or alias).
* **A report a person can act on**: package, version, ids, fixed-in versions, summary.

Exit codes: 0 clean (or skipped), 1 unexplained vulnerabilities, 2 could not audit, 3 feed unreachable
with ``--require``. ``--osv-url`` (``CT_OSV_URL``) points it at an internal OSV mirror.

    python -m tools.audit [--requirements constraints.txt] [--osv-url URL] [--require]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OSV_URL = "https://api.osv.dev/v1/query"

CLEAN, FOUND, ERROR, UNREACHABLE = 0, 1, 2, 3


class AuditConfigError(ValueError):
    """The ignore list in pyproject.toml is malformed."""


@dataclass(frozen=True)
class Ignore:
    id: str
    package: str
    reason: str
    until: date


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    ids: tuple[str, ...]
    fix_versions: tuple[str, ...]
    description: str


def load_ignores(pyproject: Path) -> list[Ignore]:
    """Read ``[tool.continuous_training.audit].ignore``; every entry needs id, package, reason, until."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    entries = data.get("tool", {}).get("continuous_training", {}).get("audit", {}).get("ignore", [])
    if not isinstance(entries, list):
        raise AuditConfigError(f"{pyproject}: tool.continuous_training.audit.ignore must be a list")
    ignores: list[Ignore] = []
    for i, entry in enumerate(entries):
        where = f"{pyproject}: tool.continuous_training.audit.ignore[{i}]"
        if not isinstance(entry, dict):
            raise AuditConfigError(f"{where}: expected a table, got {type(entry).__name__}")
        unknown = sorted(set(entry) - {"id", "package", "reason", "until"})
        if unknown:
            raise AuditConfigError(f"{where}: unknown keys {unknown}")
        for key in ("id", "package", "reason"):
            value = entry.get(key)
            if not isinstance(value, str) or not value.strip():
                raise AuditConfigError(f"{where}: {key!r} is required (a non-empty string)")
        until = entry.get("until")
        if isinstance(until, str):
            try:
                until = date.fromisoformat(until)
            except ValueError as exc:
                raise AuditConfigError(f"{where}: 'until' must be a date (YYYY-MM-DD): {exc}") from None
        if not isinstance(until, date) or isinstance(until, datetime):
            raise AuditConfigError(f"{where}: 'until' is required (a date, YYYY-MM-DD): accepted risks expire")
        ignores.append(Ignore(entry["id"], canonicalize_name(entry["package"].strip()), entry["reason"].strip(), until))
    return ignores


def probe(osv_url: str, timeout: float) -> str | None:
    """None when the feed answers a query; otherwise why not (for the SKIPPED line)."""
    if urlsplit(osv_url).scheme not in ("http", "https"):
        return f"{osv_url}: not an http(s) URL"
    body = json.dumps({"package": {"name": "pip", "ecosystem": "PyPI"}, "version": "0.1"}).encode()
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        osv_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # nosec B310
            payload = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return f"{osv_url} answered HTTP {exc.code}"
    except OSError as exc:  # URLError, timeouts, refused connections
        reason = getattr(exc, "reason", exc)
        return f"{osv_url} unreachable: {reason}"
    except ValueError:
        return f"{osv_url} did not answer JSON: not an OSV query endpoint"
    if not isinstance(payload, dict):
        return f"{osv_url} did not answer an OSV query object"
    return None


def run_pip_audit(requirements: Path, osv_url: str, timeout: float) -> dict[str, Any]:
    """pip-audit over fully pinned requirements, without resolving or installing anything."""
    with tempfile.TemporaryDirectory(prefix="ct-audit-") as tmp:
        out = Path(tmp) / "audit.json"
        cmd = [
            sys.executable,
            "-m",
            "pip_audit",
            "--requirement",
            str(requirements),
            "--no-deps",
            "--disable-pip",
            "--strict",
            "--vulnerability-service",
            "osv",
            "--osv-url",
            osv_url,
            "--timeout",
            str(int(timeout)),
            "--cache-dir",
            str(Path(tmp) / "cache"),
            "--progress-spinner",
            "off",
            "--desc",
            "on",
            "--aliases",
            "on",
            "--format",
            "json",
            "--output",
            str(out),
        ]
        # pip-audit exits 1 both for "found vulnerabilities" and for errors; the JSON file tells them apart.
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
        if not out.exists() or not out.read_text().strip():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"pip-audit produced no report (exit {proc.returncode}): {' | '.join(tail)}")
        report: dict[str, Any] = json.loads(out.read_text())
        return report


def findings_from(report: dict[str, Any]) -> tuple[list[Finding], list[str], int]:
    """(findings, skipped packages with the reason, packages audited)."""
    findings: list[Finding] = []
    skipped: list[str] = []
    audited = 0
    for dep in report.get("dependencies", []):
        if "skip_reason" in dep:
            skipped.append(f"{dep.get('name')}: {dep['skip_reason']}")
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            ids = (vuln["id"], *vuln.get("aliases", []))
            findings.append(
                Finding(
                    package=canonicalize_name(dep["name"]),
                    version=str(dep.get("version", "?")),
                    ids=tuple(dict.fromkeys(ids)),
                    fix_versions=tuple(vuln.get("fix_versions", [])),
                    description=" ".join(str(vuln.get("description") or "").split())[:160],
                )
            )
    return findings, skipped, audited


def split_accepted(
    findings: list[Finding], ignores: list[Ignore], today: date
) -> tuple[list[Finding], list[tuple[Finding, Ignore]], list[tuple[Finding, Ignore]]]:
    """(unexplained, accepted, expired): a finding is accepted by a live ignore naming one of its ids."""
    unexplained: list[Finding] = []
    accepted: list[tuple[Finding, Ignore]] = []
    expired: list[tuple[Finding, Ignore]] = []
    for finding in findings:
        match = next((i for i in ignores if i.package == finding.package and i.id in finding.ids), None)
        if match is None:
            unexplained.append(finding)
        elif match.until < today:
            expired.append((finding, match))
            unexplained.append(finding)
        else:
            accepted.append((finding, match))
    return unexplained, accepted, expired


def _line(f: Finding) -> str:
    fixed = ", ".join(f.fix_versions) or "no fix released"
    return f"  {f.package}=={f.version}  {' / '.join(f.ids)}  fixed in: {fixed}\n      {f.description}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.audit", description=__doc__.split("\n")[0])
    parser.add_argument("--requirements", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--osv-url", default=os.environ.get("CT_OSV_URL") or DEFAULT_OSV_URL)
    parser.add_argument(
        "--require",
        action="store_true",
        default=os.environ.get("CT_AUDIT_REQUIRED", "").lower() in ("1", "true", "yes"),
        help="fail (exit 3) when the feed is unreachable instead of skipping (env CT_AUDIT_REQUIRED=1)",
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per feed request")
    parser.add_argument("--today", type=date.fromisoformat, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    today = args.today or datetime.now(UTC).date()

    try:
        ignores = load_ignores(args.pyproject)
    except (AuditConfigError, tomllib.TOMLDecodeError) as exc:
        print(f"dependency audit: ERROR: {exc}", file=sys.stderr)
        return ERROR

    why_not = probe(args.osv_url, args.timeout)
    if why_not is not None:
        if args.require:
            print(f"dependency audit: FAILED: no vulnerability feed: {why_not} (--require)", file=sys.stderr)
            return UNREACHABLE
        print(
            f"dependency audit: SKIPPED: no vulnerability feed: {why_not}. Nothing was checked; run "
            "`make audit` where the feed is reachable, with CT_AUDIT_REQUIRED=1 (or CT_OSV_URL for a mirror)."
        )
        return CLEAN

    try:
        report = run_pip_audit(args.requirements, args.osv_url, args.timeout)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        print(f"dependency audit: ERROR: {exc}", file=sys.stderr)
        return ERROR
    findings, skipped, audited = findings_from(report)
    unexplained, accepted, expired = split_accepted(findings, ignores, today)

    source = f"{args.requirements.name} against {args.osv_url}"
    for finding, ignore in accepted:
        print(f"accepted until {ignore.until}: {finding.package} {ignore.id}: {ignore.reason}")
    for finding, ignore in expired:
        print(f"EXPIRED acceptance ({ignore.until}): {finding.package} {ignore.id}: {ignore.reason}")
    if skipped:
        # --strict makes pip-audit fail on an unreadable pin; a skip here is one it could not look up.
        print(f"dependency audit: ERROR: {len(skipped)} pins not audited: " + "; ".join(skipped), file=sys.stderr)
        return ERROR
    if unexplained:
        noun = "vulnerability" if len(unexplained) == 1 else "vulnerabilities"
        print(f"dependency audit: FAILED: {len(unexplained)} known {noun} in {audited} pins ({source}):")
        for finding in unexplained:
            print(_line(finding))
        print("Upgrade the pin, or accept it in [tool.continuous_training.audit] with a reason and an expiry.")
        return FOUND
    print(
        f"dependency audit: OK: {audited} pins, no unexplained known vulnerabilities"
        f" ({len(accepted)} accepted) ({source})"
    )
    return CLEAN


if __name__ == "__main__":
    sys.exit(main())
