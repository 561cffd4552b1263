"""The audit trail: every alias move of a registered model, append-only, in S3.

MLflow keeps where an alias points *now*; it forgets where it pointed before and why it moved. Every
move the package makes (``challenger`` set or cleared, ``champion`` and ``previous_champion`` moved,
a rollback) is written here as **one object per event**:

    s3://<bucket>/<CT_AUDIT_PREFIX><registered model>/<UTC time, microseconds>-<random>.json

with ``If-None-Match: *`` (a conditional write: an event is never overwritten, by us or by a racing
writer), never rewritten or deleted by the package; the bucket is versioned, and an S3 Object Lock or
a bucket policy denying ``DeleteObject`` on the prefix makes it tamper-evident for auditors. Keys sort
by time, so the history is one listing.

Each event says **who** (the DAG run id, or the approving user for a human approval), **when**,
**from which version to which**, and **why** (a sentence, and the URI of the record that justified
it: the decision record, a rollout analysis). :func:`serving_at` answers "which version was the
champion at 2026-11-12 14:00, and why"; ``python -m include.continuous_training history`` prints it.

Standard library and boto3 only: the DAG tasks and the endpoint's admin side import it freely.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from include.continuous_training.config import Settings
from include.continuous_training.storage import put_json, safe_key_part

ACTIONS = ("set", "cleared")


@dataclass(frozen=True)
class AuditEvent:
    """One alias move: ``alias`` went from ``from_version`` to ``to_version`` (None: not set)."""

    model: str
    alias: str
    action: str  # "set" | "cleared"
    from_version: str | None
    to_version: str | None
    who: str
    why: str
    at: str  # ISO 8601, UTC, microseconds
    record_uri: str | None = None

    def describe(self) -> str:
        moved = (
            f"{self.alias}: v{self.from_version or '-'} -> v{self.to_version}"
            if self.action == "set"
            else f"{self.alias}: v{self.from_version or '-'} cleared"
        )
        record = f" [{self.record_uri}]" if self.record_uri else ""
        return f"{self.at}  {moved}  by {self.who}: {self.why}{record}"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AuditEvent:
        values: dict[str, Any] = {name: raw.get(name) for name in cls.__dataclass_fields__}
        return cls(**values)


def audit_prefix(settings: Settings) -> str:
    return f"{settings.audit_prefix}{safe_key_part(settings.model_name)}/"


def record_event(
    s3: Any,
    settings: Settings,
    alias: str,
    from_version: str | None,
    to_version: str | None,
    who: str,
    why: str,
    record_uri: str | None = None,
) -> AuditEvent:
    """Append one event (a new object, written only if absent); return it."""
    now = datetime.now(UTC)
    event = AuditEvent(
        model=settings.model_name,
        alias=alias,
        action="set" if to_version is not None else "cleared",
        from_version=from_version,
        to_version=to_version,
        who=who,
        why=why,
        at=now.isoformat(timespec="microseconds"),
        record_uri=record_uri,
    )
    key = f"{audit_prefix(settings)}{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}.json"
    put_json(s3, settings.s3_bucket, key, asdict(event), only_if_absent=True)
    return event


def default_who() -> str:
    """Who moved an alias outside a DAG run (a script, a notebook): the OS user and the host."""
    import getpass
    import socket

    return f"script {getpass.getuser()}@{socket.gethostname()}"


def record_alias_move(
    settings: Settings,
    alias: str,
    from_version: str | None,
    to_version: str | None,
    who: str | None = None,
    why: str = "",
    record_uri: str | None = None,
    s3: Any = None,
) -> AuditEvent:
    """:func:`record_event` with the S3 client of ``CT_AWS_CONN_ID`` (what the registry functions call)."""
    if s3 is None:
        from include.continuous_training.storage import s3_client_from_connection

        s3 = s3_client_from_connection(settings.aws_conn_id)
    return record_event(s3, settings, alias, from_version, to_version, who or default_who(), why, record_uri)


def last_move(s3: Any, settings: Settings, alias: str) -> AuditEvent | None:
    moves = [e for e in read_history(s3, settings) if e.alias == alias]
    return moves[-1] if moves else None


def read_history(s3: Any, settings: Settings) -> list[AuditEvent]:
    """Every event of the model, oldest first."""
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.s3_bucket, Prefix=audit_prefix(settings)):
        keys += [item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(".json")]
    events = [
        AuditEvent.from_dict(json.loads(s3.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()))
        for key in sorted(keys)
    ]
    return sorted(events, key=lambda e: e.at)


def serving_at(events: list[AuditEvent], when: datetime) -> AuditEvent | None:
    """The event that made the champion of ``when`` (None: no champion yet, or it had been cleared)."""
    moves = [e for e in events if e.alias == "champion" and datetime.fromisoformat(e.at) <= when]
    if not moves or moves[-1].to_version is None:
        return None
    return moves[-1]


def format_history(events: list[AuditEvent], when: datetime | None = None) -> str:
    """The history as lines; with ``when``, the answer to "which version was serving then, and why"."""
    if when is None:
        return "\n".join(e.describe() for e in events) if events else "no alias moves recorded"
    event = serving_at(events, when)
    if event is None:
        return f"at {when.isoformat()}: no champion (nothing was serving from the registry)"
    return (
        f"at {when.isoformat()}: version {event.to_version} was the champion, since {event.at}, "
        f"moved by {event.who}: {event.why}" + (f" [{event.record_uri}]" if event.record_uri else "")
    )
