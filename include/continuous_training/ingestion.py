"""Take new landing objects in: claim, read, validate, then curate or quarantine.

The manifest lives in S3 under ``manifest_prefix`` as one small JSON object per landing object
version, keyed by a hash of (key, ETag):

- ``claims/<entry>.json``: written with ``If-None-Match: *`` before an object is processed, so two
  runs can never both win the same object. A claim older than ``claim_timeout`` (its run died) may
  be taken over, again with a conditional write only one run can win.
- ``done/<entry>.json``: the outcome (``ingested`` or ``quarantined``), with the curated URI or the
  quarantine report URI, row counts, the suite version and the distribution guards that fired
  (``flags``; a curated batch with flags also has a report under ``reports/ingest/`` and sent an alert).

A quarantined object is offered again only on request, after a suite fix: :func:`replay_object`
(``python -m include.continuous_training.ingestion replay --key landing/x.csv`` or
``--all-quarantined``, or the ingest DAG's ``replay_keys`` Param) validates it against the current
suite, claims ``replays/<entry>/<suite tag>.json`` (one replay per object version and suite), and
keeps the earlier outcomes in the ``done`` entry's ``attempts``.

An object with a ``done`` entry, or a live claim, is never offered again by the sensor. A landing object that is
overwritten gets a new ETag and so counts as a new version. Nothing under ``landing/`` is ever
modified or deleted: quarantine is a server-side copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from include.continuous_training.config import Settings
from include.continuous_training.errors import ConfigurationError, DataError, NothingToDo
from include.continuous_training.storage import (
    ObjectRef,
    PreconditionFailed,
    S3Client,
    copy_object,
    get_json,
    list_objects,
    parquet_bytes,
    put_bytes,
    put_json,
    read_object,
    safe_key_part,
)

if TYPE_CHECKING:
    import pandas as pd

    from include.continuous_training.validation import EventTimeCheck, GuardFlag

log = logging.getLogger(__name__)

Status = Literal["ingested", "quarantined"]
CLAIM_TIMEOUT = timedelta(hours=2)


class BatchQuarantined(DataError):
    """The object (or too many of its rows) failed validation and was quarantined."""


class AlreadyClaimed(NothingToDo):
    """Another live run holds the claim on this object (this task has nothing to do)."""


@dataclass(frozen=True)
class IngestResult:
    """The outcome of one landing object, as recorded in its ``done`` manifest entry."""

    batch_id: str
    source: ObjectRef
    status: Status
    rows: int
    good_rows: int
    bad_rows: int
    curated_uri: str | None
    report_uri: str | None
    reason: str
    # Distribution guards that fired (validation.GuardFlag.as_dict()): column, check, observed vs expected.
    flags: list[dict[str, Any]] = field(default_factory=list)
    # Event times against the ingest time: rows after it (+ skew) are among ``bad_rows``; rows older
    # than the training window are only counted. Absent in entries written before these checks.
    future_rows: int = 0
    old_rows: int = 0
    event_times: dict[str, Any] | None = None
    # ``<dataset>/batch@v7`` (dataset_versions.py); absent in entries written before versions existed.
    dataset_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "source": self.source.as_dict()}

    def asset_extra(self) -> dict[str, Any]:
        """What the curated-batches Asset event carries to the training DAG."""
        return {
            "batch_id": self.batch_id,
            "rows": self.good_rows,
            "bad_rows": self.bad_rows,
            "uri": self.curated_uri,
            "source_key": self.source.key,
            "flags": self.flags,
            "future_rows": self.future_rows,
            "old_rows": self.old_rows,
            "dataset_version": self.dataset_version,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IngestResult:
        # Entries recorded before a field existed lack it: that field keeps its default.
        fields = {k: raw[k] for k in cls.__dataclass_fields__ if k != "source" and k in raw}
        return cls(source=ObjectRef.from_dict(raw["source"]), **fields)


def batch_id_for(ref: ObjectRef) -> str:
    """Stable id of one landing object version: the same key and ETag always give the same id."""
    return hashlib.sha256(f"{ref.key}\0{ref.etag}".encode()).hexdigest()[:24]


def claim_key(settings: Settings, batch_id: str) -> str:
    return f"{settings.manifest_prefix}claims/{batch_id}.json"


def done_key(settings: Settings, batch_id: str) -> str:
    return f"{settings.manifest_prefix}done/{batch_id}.json"


def _entry_ids(client: S3Client, settings: Settings, kind: str) -> dict[str, datetime]:
    """Manifest entries of one kind with their last-modified times (a listing, no reads)."""
    prefix = f"{settings.manifest_prefix}{kind}/"
    paginator = client.get_paginator("list_objects_v2")
    entries: dict[str, datetime] = {}
    for page in paginator.paginate(Bucket=settings.s3_bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = item["Key"][len(prefix) :]
            if name.endswith(".json"):
                entries[name[: -len(".json")]] = item["LastModified"]
    return entries


def find_new_objects(
    client: S3Client,
    settings: Settings,
    limit: int | None = None,
    now: datetime | None = None,
    claim_timeout: timedelta = CLAIM_TIMEOUT,
) -> list[ObjectRef]:
    """Landing objects with no ``done`` entry and no live claim, oldest key first.

    Costs three paginated listings and no object reads, so the sensor's trigger can call it often.
    """
    now = now or datetime.now(UTC)
    done = _entry_ids(client, settings, "done")
    claims = _entry_ids(client, settings, "claims")
    fresh: list[ObjectRef] = []
    for ref in list_objects(client, settings.s3_bucket, settings.landing_prefix):
        batch_id = batch_id_for(ref)
        if batch_id in done:
            continue
        claimed_at = claims.get(batch_id)
        if claimed_at is not None and now - claimed_at < claim_timeout:
            continue
        fresh.append(ref)
    fresh.sort(key=lambda r: r.key)
    return fresh[:limit] if limit is not None else fresh


def claim_object(
    client: S3Client,
    settings: Settings,
    ref: ObjectRef,
    run_id: str,
    claim_timeout: timedelta = CLAIM_TIMEOUT,
) -> None:
    """Claim ``ref`` for ``run_id``; a retry of the same run keeps its claim.

    Raises :class:`AlreadyClaimed` when another run holds a live claim.
    """
    _claim(client, settings, claim_key(settings, batch_id_for(ref)), ref, run_id, claim_timeout)


def _claim(
    client: S3Client, settings: Settings, key: str, ref: ObjectRef, run_id: str, claim_timeout: timedelta
) -> None:
    body = {
        "batch_id": batch_id_for(ref),
        "source": ref.as_dict(),
        "run_id": run_id,
        "claimed_at": datetime.now(UTC).isoformat(),
    }
    try:
        put_json(client, settings.s3_bucket, key, body, only_if_absent=True)
        return
    except PreconditionFailed:
        pass
    head = client.head_object(Bucket=settings.s3_bucket, Key=key)
    current = get_json(client, settings.s3_bucket, key) or {}
    if current.get("run_id") == run_id:
        return
    age = datetime.now(UTC) - head["LastModified"]
    if age < claim_timeout:
        raise AlreadyClaimed(f"{ref.key}: claimed by run {current.get('run_id')!r} {age.total_seconds():.0f}s ago")
    # Take over a stale claim; If-Match on the claim's ETag lets only one run win the takeover.
    # Only a refused condition means another run won; any other error (network, S3 down) propagates
    # and the task is retried.
    try:
        put_json(client, settings.s3_bucket, key, body, if_match=head["ETag"])
    except PreconditionFailed as error:
        raise AlreadyClaimed(f"{ref.key}: another run took over the stale claim first") from error
    log.warning("%s: took over a stale claim of run %s", ref.key, current.get("run_id"))


def recorded_result(client: S3Client, settings: Settings, ref: ObjectRef) -> IngestResult | None:
    """The outcome already recorded for ``ref``, if any (makes re-runs idempotent)."""
    raw = get_json(client, settings.s3_bucket, done_key(settings, batch_id_for(ref)))
    return IngestResult.from_dict(raw) if raw else None


def read_manifest(client: S3Client, settings: Settings) -> list[IngestResult]:
    """Every recorded outcome (for people, the demo summary and the training DAG)."""
    results = []
    for ref in list_objects(client, settings.s3_bucket, f"{settings.manifest_prefix}done/"):
        raw = get_json(client, settings.s3_bucket, ref.key)
        if raw:
            results.append(IngestResult.from_dict(raw))
    return sorted(results, key=lambda r: r.source.key)


def ingest_object(
    client: S3Client, settings: Settings, ref: ObjectRef, run_id: str, *, ingested_at: datetime | None = None
) -> IngestResult:
    """Claim, validate and curate (or quarantine) one landing object version.

    Returns the :class:`IngestResult` for an ingested batch. Raises :class:`BatchQuarantined`
    (with a one-line reason naming the object and where it went) when the batch was quarantined,
    and :class:`AlreadyClaimed` when another run is processing it. Re-running for an object that
    already has an outcome returns (or raises) that same outcome without writing anything.
    Event times are checked against ``ingested_at`` (default: now). Before anything is read, the
    configured columns are checked against the suite (``validation.SettingNotInSuite``).
    """
    from include.continuous_training.validation import check_settings_against_suite

    check_settings_against_suite(settings)
    previous = recorded_result(client, settings, ref)
    if previous is None:
        claim_object(client, settings, ref, run_id)
        previous = recorded_result(client, settings, ref)  # a run may have finished it meanwhile
    result = previous or _process(client, settings, ref, run_id, ingested_at or datetime.now(UTC))
    if result.status == "quarantined":
        raise BatchQuarantined(result.reason)
    return result


def _process(
    client: S3Client,
    settings: Settings,
    ref: ObjectRef,
    run_id: str,
    ingested_at: datetime,
    replay: Replay | None = None,
) -> IngestResult:
    from include.continuous_training.validation import UnreadableBatchError, read_batch, validate_batch

    batch_id = batch_id_for(ref)
    base = {
        "batch_id": batch_id,
        "source": ref.as_dict(),
        "dag_run_id": run_id,
        "checked_at": ingested_at.isoformat(),
    }
    if ref.size > settings.max_batch_bytes:
        reason = (
            f"object is {ref.size} bytes, over the {settings.max_batch_bytes}-byte limit (CT_MAX_BATCH_BYTES); not read"
        )
        return _quarantine_batch(client, settings, ref, {**base, "reason": reason, "rows": None}, rows=0, replay=replay)
    data = read_object(client, settings.s3_bucket, ref)
    try:
        frame = read_batch(data, ref.key, settings)
    except UnreadableBatchError as error:
        return _quarantine_batch(
            client, settings, ref, {**base, "reason": f"unreadable: {error}", "rows": None}, rows=0, replay=replay
        )
    del data
    outcome = validate_batch(frame, settings, ingested_at=ingested_at)
    times = outcome.event_times
    report = {**base, **outcome.as_report(), "example_rows": _examples(frame, outcome.bad_row_index)}
    flags = [flag.as_dict() for flag in outcome.flags]
    if outcome.batch_rejected:
        return _quarantine_batch(
            client, settings, ref, report, rows=outcome.rows, flags=flags, times=times, replay=replay
        )

    old_note = times.old_rows_note(outcome.rows) if times else ""
    good = frame.drop(index=frame.index[outcome.bad_row_index]) if outcome.bad_row_index else frame
    report_uri = None
    if outcome.bad_row_index:
        bad = frame.iloc[outcome.bad_row_index]
        rows_key = f"{_quarantine_dir(settings, ref, replay)}rows.parquet"
        put_bytes(client, settings.s3_bucket, rows_key, parquet_bytes(bad))
        report_key = f"{_quarantine_dir(settings, ref, replay)}report.json"
        report.update(verdict="ingested_with_rows_quarantined", quarantined_rows_uri=settings.s3_uri(rows_key))
        put_json(client, settings.s3_bucket, report_key, report)
        report_uri = settings.s3_uri(report_key)
    elif flags:  # curated whole but flagged: the report goes with the validation reports, not to quarantine
        report_key = f"{settings.reports_prefix}ingest/{batch_id}/report.json"
        report.update(verdict="ingested_flagged")
        put_json(client, settings.s3_bucket, report_key, report)
        report_uri = settings.s3_uri(report_key)
    good = with_derived_columns(good, settings, ref, ingested_at)
    curated_key = f"{settings.curated_prefix}batch_id={batch_id}/data.parquet"
    put_bytes(client, settings.s3_bucket, curated_key, parquet_bytes(good))
    from include.continuous_training.dataset_versions import version_for

    version = version_for(
        client, settings, "batch", batch_id, {"source_key": ref.key, "source_etag": ref.etag, "rows": len(good)}
    )
    result = IngestResult(
        batch_id=batch_id,
        source=ref,
        status="ingested",
        rows=outcome.rows,
        good_rows=len(good),
        bad_rows=len(outcome.bad_row_index),
        curated_uri=settings.s3_uri(curated_key),
        report_uri=report_uri,
        reason=outcome.reason + old_note,
        flags=flags,
        future_rows=times.future_rows if times else 0,
        old_rows=times.old_rows if times else 0,
        event_times=times.as_report() if times else None,
        dataset_version=version.label,
    )
    log.info("%s: curated as %s (%d rows)", ref.key, version.label, len(good))
    if flags:
        _alert_flagged(settings, result, outcome.flags)
    if old_note:
        log.warning("%s: curated%s", ref.key, old_note)
    _record(client, settings, result, outcome.suite.version, replay)
    return result


def derived_row_ids(ref: ObjectRef, rows: Iterable[int]) -> list[str]:
    """Row ids for a table without an id column: ``<batch id>-<row number in the object>``.

    The batch id is a hash of the object's key and ETag (:func:`batch_id_for`), the row number the
    row's position in the object as it landed (before any bad row is set aside). Why this and not a
    hash of the row's values: the same object version always gives the same ids (a re-run, a replay,
    a re-curation after a suite fix dedup onto the same rows), two different objects (another key, or
    the same key overwritten: a new ETag) can never collide, and two genuinely identical rows (two
    equal purchases in one export) stay two rows instead of being merged by the training dedup. The
    zero-padded row number keeps the rows of a batch in their landing order when sorted by id. The
    cost: the same row landing again in *another* object is a new row (there is no id to tell).
    """
    return [f"{batch_id_for(ref)}-{row:09d}" for row in rows]


def with_derived_columns(
    frame: pd.DataFrame, settings: Settings, ref: ObjectRef, ingested_at: datetime
) -> pd.DataFrame:
    """``frame`` with the id and event-time columns ingest derives when the table has none.

    With ``CT_ID_COLUMN`` empty: ``ct_row_id`` (:func:`derived_row_ids`, from the rows' positions in
    ``frame``'s index, which is their place in the landing object). With ``CT_TIMESTAMP_COLUMN``
    empty: ``ct_ingested_at``, the ingest time (tz-naive UTC, like every curated timestamp) on every
    row, so time-based splits order batches by when they were ingested. A column already of that name
    is left as it is.
    """
    import pandas as pd

    added: dict[str, Any] = {}
    if not settings.id_column and settings.row_id_column not in frame.columns:
        added[settings.row_id_column] = pd.Series(
            derived_row_ids(ref, (int(i) for i in frame.index)), index=frame.index, dtype="string"
        )
    if not settings.timestamp_column and settings.event_time_column not in frame.columns:
        at = pd.Timestamp(ingested_at)
        at = at.tz_convert("UTC").tz_localize(None) if at.tzinfo else at
        added[settings.event_time_column] = pd.Series(at, index=frame.index, dtype="datetime64[ns]")
    return frame.assign(**added) if added else frame


# -- replaying quarantined objects --------------------------------------------------------------------
class ReplayRefused(ConfigurationError):
    """A replay was asked for an object that has no quarantine outcome to replay (the request is wrong)."""


@dataclass(frozen=True)
class Replay:
    """One replay of a quarantined object: the outcome it replaces, and the suite it is judged by."""

    previous: dict[str, Any]  # the ``done`` entry as recorded (kept in the new entry's ``attempts``)
    suite_tag: str  # ``v<version>-<sha256 prefix>`` of the current suite: one replay per object and suite


def current_suite_tag(settings: Settings) -> str:
    """``v<meta.version>-<12 hex of the file's sha256>`` of ``CT_EXPECTATION_SUITE`` (no Great Expectations)."""
    raw_bytes = settings.expectation_suite_path.read_bytes()
    version = str((json.loads(raw_bytes).get("meta") or {}).get("version", "unversioned"))
    return safe_key_part(f"v{version}-{hashlib.sha256(raw_bytes).hexdigest()[:12]}")


def replay_claim_key(settings: Settings, batch_id: str, suite_tag: str) -> str:
    return f"{settings.manifest_prefix}replays/{batch_id}/{suite_tag}.json"


def quarantined_objects(client: S3Client, settings: Settings, keys: Iterable[str] | None = None) -> list[ObjectRef]:
    """The landing object versions whose recorded outcome is ``quarantined``: all, or those of ``keys``.

    Raises :class:`ReplayRefused` naming a key with no quarantined version (never landed, or curated).
    """
    quarantined = [r.source for r in read_manifest(client, settings) if r.status == "quarantined"]
    if keys is None:
        return quarantined
    wanted = list(dict.fromkeys(keys))
    chosen = [ref for ref in quarantined if ref.key in wanted]
    missing = sorted(set(wanted) - {ref.key for ref in chosen})
    if missing:
        raise ReplayRefused(
            f"replay_keys {missing}: no quarantined object with that key in the ingest manifest "
            f"(s3://{settings.s3_bucket}/{settings.manifest_prefix}done/); nothing replayed"
        )
    return chosen


def replay_object(
    client: S3Client,
    settings: Settings,
    ref: ObjectRef,
    run_id: str,
    *,
    ingested_at: datetime | None = None,
    claim_timeout: timedelta = CLAIM_TIMEOUT,
) -> IngestResult:
    """Validate a quarantined object version again, against the suite deployed *now*, and curate it if it passes.

    Exactly once per (object version, suite): a claim ``replays/<batch id>/<suite tag>.json`` written with
    ``If-None-Match`` (taken over like an ingest claim when its run died), so two replays at once curate it
    once (the other gets :class:`AlreadyClaimed`), and replaying again under the same suite returns (or
    raises) the recorded outcome. The ``done`` entry then holds the new outcome, with every earlier one in
    ``attempts`` (oldest first; the first quarantine's copy and report stay where they were, a replay's
    quarantine goes to ``quarantine/<batch id>/replay-<suite tag>/``). Raises :class:`BatchQuarantined`
    when it fails again, :class:`ReplayRefused` when ``ref`` has no quarantine outcome.
    """
    from include.continuous_training.validation import check_settings_against_suite

    check_settings_against_suite(settings)
    suite_tag = current_suite_tag(settings)
    batch_id = batch_id_for(ref)

    def recorded() -> IngestResult | None:
        raw = get_json(client, settings.s3_bucket, done_key(settings, batch_id))
        if not raw:
            raise ReplayRefused(f"{ref.key} (ETag {ref.etag}) has no recorded outcome: nothing to replay")
        if raw.get("replay_suite") == suite_tag:  # replayed under this suite already: that outcome stands
            return IngestResult.from_dict(raw)
        if raw.get("status") != "quarantined":
            raise ReplayRefused(f"{ref.key} (ETag {ref.etag}) was curated, not quarantined: nothing to replay")
        return None

    result = recorded()
    if result is None:
        _claim(client, settings, replay_claim_key(settings, batch_id, suite_tag), ref, run_id, claim_timeout)
        result = recorded()  # a replay may have finished meanwhile
    if result is None:
        previous = get_json(client, settings.s3_bucket, done_key(settings, batch_id)) or {}
        log.info("%s: replaying quarantine (%s) under suite %s", ref.key, previous.get("suite_version"), suite_tag)
        replay = Replay(previous=previous, suite_tag=suite_tag)
        result = _process(client, settings, ref, run_id, ingested_at or datetime.now(UTC), replay)
    if result.status == "quarantined":
        raise BatchQuarantined(result.reason)
    return result


def _alert_flagged(settings: Settings, result: IngestResult, flags: list[GuardFlag]) -> None:
    """A curated batch tripped a distribution guard: a person should look (upstream bug or a real change?).

    Sent before the ``done`` entry is written: a retry after a crash in between alerts twice rather than never.
    """
    from include.continuous_training.notifications import send_alert

    fired = "; ".join(flag.describe() for flag in flags)
    send_alert(
        settings,
        f"Batch curated but flagged: {result.source.key}",
        f"{result.source.key}: distribution guards fired: {fired}. Curated as {result.curated_uri}; "
        f"report {result.report_uri}. An upstream bug (a default value written on every row) or a real change? "
        "CT_DISTRIBUTION_GUARD_ACTION=quarantine keeps such batches out of training.",
    )


def _quarantine_dir(settings: Settings, ref: ObjectRef, replay: Replay | None = None) -> str:
    """``quarantine/<batch id>/``; a replay writes under ``replay-<suite>/`` in it (the first outcome stays)."""
    folder = f"{settings.quarantine_prefix}{batch_id_for(ref)}/"
    return f"{folder}replay-{replay.suite_tag}/" if replay else folder


def _quarantine_batch(
    client: S3Client,
    settings: Settings,
    ref: ObjectRef,
    report: dict[str, Any],
    rows: int,
    flags: list[dict[str, Any]] | None = None,
    times: EventTimeCheck | None = None,
    replay: Replay | None = None,
) -> IngestResult:
    """Copy the whole object to quarantine with a report; landing stays as it was."""
    folder = _quarantine_dir(settings, ref, replay)
    object_key = folder + safe_key_part(ref.key.rsplit("/", 1)[-1])
    report_key = folder + "report.json"
    copy_object(client, settings.s3_bucket, ref, object_key)
    reason = (
        f"{ref.key}: {report['reason']}; copied to {settings.s3_uri(object_key)}, "
        f"report {settings.s3_uri(report_key)}; landing untouched, nothing curated"
    )
    report.update(verdict="quarantined", quarantined_object_uri=settings.s3_uri(object_key), summary=reason)
    put_json(client, settings.s3_bucket, report_key, report)
    result = IngestResult(
        batch_id=batch_id_for(ref),
        source=ref,
        status="quarantined",
        rows=rows,
        good_rows=0,
        bad_rows=rows,
        curated_uri=None,
        report_uri=settings.s3_uri(report_key),
        reason=reason,
        flags=flags or [],
        future_rows=times.future_rows if times else 0,
        old_rows=times.old_rows if times else 0,
        event_times=times.as_report() if times else None,
    )
    suite_version = report.get("suite", {}).get("version") if isinstance(report.get("suite"), dict) else None
    _record(client, settings, result, suite_version, replay)
    return result


def _record(
    client: S3Client, settings: Settings, result: IngestResult, suite_version: str | None, replay: Replay | None = None
) -> None:
    entry = {**result.as_dict(), "suite_version": suite_version, "recorded_at": datetime.now(UTC).isoformat()}
    if replay is not None:  # the earlier outcomes stay in the entry, oldest first
        earlier = {k: v for k, v in replay.previous.items() if k != "attempts"}
        entry.update(attempts=[*replay.previous.get("attempts", []), earlier], replay_suite=replay.suite_tag)
    put_json(client, settings.s3_bucket, done_key(settings, result.batch_id), entry)


def _examples(frame: pd.DataFrame, bad_index: Iterable[int]) -> list[dict[str, Any]]:
    """A few rows for the report: failing rows when known, else the first rows."""
    index = list(bad_index)[:5]
    sample = frame.iloc[index] if index else frame.head(5)
    return list(json.loads(sample.to_json(orient="records", date_format="iso", default_handler=str)))


def main(argv: list[str] | None = None) -> int:
    """``python -m include.continuous_training.ingestion replay (--key K ... | --all-quarantined) [--model NAME]``."""
    import argparse

    from include.continuous_training.config import load_settings
    from include.continuous_training.storage import s3_client

    parser = argparse.ArgumentParser(prog="python -m include.continuous_training.ingestion")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser(
        "replay", help="validate quarantined landing objects again against the current suite (CT_EXPECTATION_SUITE)"
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", action="append", help="a landing key, e.g. landing/x.csv (repeatable)")
    which.add_argument("--all-quarantined", action="store_true", help="every object whose outcome is quarantined")
    replay.add_argument("--run-id", default=None, help="recorded as the claim's run (default: replay-cli-<time>)")
    replay.add_argument(
        "--model", default=None, help="the model file's settings (default: CT_MODEL, else the environment)"
    )
    args = parser.parse_args(argv)

    settings = load_settings(model=args.model)
    client = s3_client(settings)
    run_id = args.run_id or f"replay-cli-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    try:
        refs = quarantined_objects(client, settings, None if args.all_quarantined else args.key)
    except ReplayRefused as error:
        print(error)
        return 2
    failed = 0
    for ref in refs:
        try:
            result = replay_object(client, settings, ref, run_id)
        except (BatchQuarantined, AlreadyClaimed, ReplayRefused) as error:
            failed += 1
            print(f"{ref.key}: {error}")
        else:
            print(f"{ref.key}: curated {result.good_rows} rows as {result.curated_uri} ({result.reason})")
    print(f"replayed {len(refs)} object(s): {len(refs) - failed} curated, {failed} not")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
