"""The desired deployment of one model, in one S3 object every endpoint replica follows.

What it holds (:class:`DesiredDeployment`): the ``champion`` version, an optional ``candidate``,
the ``mode`` (``direct`` / ``shadow`` / ``canary``), ``canary_percent`` and ``shadow_percent``, a
``generation`` (1 on the first write, +1 on every write), when, by whom (a DAG run id, ``admin``)
and why. Where: ``s3://<CT_S3_BUCKET>/<CT_SERVING_STATE_PREFIX><registered model>/deployment.json``
(:func:`state_key`; the prefix is per model like the other prefixes: ``<storage.prefix>/serving/``
for a model file with its own storage prefix, ``serving/`` for the bundled one).

Why an S3 object, not the MLflow registry (aliases plus a tag):

- one object is one atomic state: champion, candidate, mode and shares change in one write, so no
  replica ever reads a new candidate with an old mode; in the registry an alias move and a tag
  write are two requests another writer can interleave;
- compare-and-swap: a write carries ``If-Match`` on the ETag it read (``If-None-Match: *`` for the
  first), so of two concurrent writers exactly one wins and the other gets
  :class:`DeploymentConflict`; :meth:`DeploymentStore.update` re-reads and re-applies its change.
  MLflow has no conditional update. (moto_server 5.2.5, the tests' S3, honours both headers on
  ``PutObject`` and ``If-None-Match`` on ``GetObject``: checked with the installed version.)
- history: with bucket versioning on (AWS S3, MinIO) every generation stays readable as an object
  version: who changed what, when and why;
- reach and cost: the replicas already write the inference log to this bucket, and a poll is a GET
  with ``If-None-Match`` on the last ETag (``304 Not Modified``, no body), cheap enough for every
  worker of every replica every ``CT_SERVING_POLL_SECONDS``; the registry stays off that path.

The contract the endpoint keeps and the DAG side builds on:

- no object: nothing was ever written; replicas serve the registry's ``champion`` alias;
- ``champion`` None: serve nothing (``POST /admin/unload``);
- ``direct``: the champion answers every request; ``candidate`` must be None;
- ``shadow``: the champion answers every request; the candidate scores ``shadow_percent`` of them off
  the response path (logged with ``variant=candidate``, ``served=false``);
- ``canary``: the candidate answers the records whose entity falls under ``canary_percent``
  (:func:`canary_bucket` of :func:`entity_key`: sticky per id, monotone in the percentage, drawn
  afresh per candidate); the variant that did not answer scores ``shadow_percent`` of requests off
  the path, so both scores exist for the same live traffic;
- a replica reports the generation it applied in ``GET /metadata`` (``deployment.generation``,
  ``deployment.converged`` once every worker of the replica applied it) and ``/metrics``
  (``ct_deployment_generation``).

Standard library (plus boto3, imported when the store is first used): the endpoint and DAG tasks
import it, and it must not drag pandas or MLflow along.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from include.continuous_training.config import Settings
from include.continuous_training.errors import ConfigurationError, ContinuousTrainingError

if TYPE_CHECKING:
    from include.continuous_training.storage import S3Client

log = logging.getLogger(__name__)

Mode = Literal["direct", "shadow", "canary"]
MODES: tuple[str, ...] = get_args(Mode)
STATE_FILE = "deployment.json"


class DeploymentStateError(ConfigurationError):
    """A desired deployment is malformed (a field of the wrong type, a mode without its candidate)."""


class DeploymentConflict(ContinuousTrainingError):
    """Another writer changed the desired deployment first (the conditional write lost): read and retry."""

    retryable = True


def _percent(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DeploymentStateError(f"{name}: expected a number in [0, 100], got {value!r}")
    if not 0.0 <= value <= 100.0:
        raise DeploymentStateError(f"{name}: expected a number in [0, 100], got {value}")
    return float(value)


def _version(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.isdigit():
        raise DeploymentStateError(f"{name}: expected a registered model version such as '7' (or null), got {value!r}")
    return value


@dataclass(frozen=True)
class DesiredDeployment:
    """What every replica of one model's endpoint should serve (see the module docstring for the modes).

    ``generation`` 0 and an empty ``updated_at`` mark a proposal not yet written:
    :meth:`DeploymentStore.update` stamps both. Invalid combinations raise
    :class:`DeploymentStateError` naming the field.
    """

    champion: str | None
    candidate: str | None = None
    mode: Mode = "direct"
    canary_percent: float = 0.0
    shadow_percent: float = 0.0
    generation: int = 0
    updated_at: str = ""
    updated_by: str = "admin"
    reason: str = ""

    def __post_init__(self) -> None:
        _version("champion", self.champion)
        _version("candidate", self.candidate)
        if self.mode not in MODES:
            raise DeploymentStateError(f"mode: expected one of {list(MODES)}, got {self.mode!r}")
        object.__setattr__(self, "canary_percent", _percent("canary_percent", self.canary_percent))
        object.__setattr__(self, "shadow_percent", _percent("shadow_percent", self.shadow_percent))
        if self.mode == "direct" and self.candidate is not None:
            raise DeploymentStateError(
                f"candidate: mode direct serves the champion only, got candidate {self.candidate!r} "
                "(use mode shadow or canary, or clear the candidate)"
            )
        if self.mode != "direct":
            if self.candidate is None:
                raise DeploymentStateError(f"candidate: mode {self.mode} needs a candidate version")
            if self.champion is None:
                raise DeploymentStateError(f"champion: mode {self.mode} needs a champion to compare the candidate with")
            if self.candidate == self.champion:
                raise DeploymentStateError(f"candidate: version {self.candidate} is already the champion")
        if isinstance(self.generation, bool) or not isinstance(self.generation, int) or self.generation < 0:
            raise DeploymentStateError(f"generation: expected a whole number >= 0, got {self.generation!r}")
        if self.generation and not _is_utc_time(self.updated_at):
            raise DeploymentStateError(
                f"updated_at: expected an ISO 8601 time with a UTC offset, got {self.updated_at!r}"
            )
        for name in ("updated_by", "reason"):
            if not isinstance(getattr(self, name), str):
                raise DeploymentStateError(f"{name}: expected text, got {getattr(self, name)!r}")

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions a replica must hold to serve this state (champion first)."""
        return tuple(v for v in (self.champion, self.candidate) if v is not None)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str = STATE_FILE) -> DesiredDeployment:
        """Parse and check a stored state; :class:`DeploymentStateError` names ``where`` and the field.

        Unknown keys are ignored (a newer writer may add some); every field of this class is required.
        """
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise DeploymentStateError(f"{where}: not JSON ({error})") from None
        if not isinstance(raw, dict):
            raise DeploymentStateError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in raw]
        if missing:
            raise DeploymentStateError(f"{where}: missing field(s) {missing}")
        try:
            state = cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})
        except DeploymentStateError as error:
            raise DeploymentStateError(f"{where}: {error}") from None
        if state.generation < 1:
            raise DeploymentStateError(
                f"{where}: generation: a stored state has generation >= 1, got {state.generation}"
            )
        return state


def _is_utc_time(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.utcoffset() is not None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# -- sticky canary assignment ----------------------------------------------------------------------
def entity_key(record: Mapping[str, Any], id_column: str) -> str:
    """Who a record is about: its ``id_column`` value (``42`` and ``"42"`` are the same entity), or,
    when the table has no id column or the record carries none, the record itself as canonical JSON
    (sorted keys, no spaces): the same record always gets the same answer."""
    if id_column:
        value = record.get(id_column)
        if value is not None:
            return value if isinstance(value, str) else json.dumps(value)
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canary_bucket(key: str, salt: str = "") -> float:
    """A stable position in [0, 100) for ``key`` (BLAKE2b, not Python's per-process salted ``hash``).

    The candidate answers when ``canary_bucket(key, candidate) < canary_percent``: the same entity
    always lands in the same place (sticky), and raising the percentage only adds entities (monotone).
    The endpoint salts with the candidate version, so each rollout draws its own share of customers.
    """
    digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * 100.0 / 2**64


# -- the store -------------------------------------------------------------------------------------
def state_key(settings: Settings) -> str:
    """The object holding ``settings.model_name``'s desired deployment."""
    from include.continuous_training.storage import safe_key_part

    return f"{settings.serving_state_prefix}{safe_key_part(settings.model_name)}/{STATE_FILE}"


@dataclass(frozen=True)
class StoredDeployment:
    """A state as read from (or written to) the store, with the ETag a conditional write must match."""

    state: DesiredDeployment
    etag: str


@dataclass(frozen=True)
class Poll:
    """What a conditional read found: ``changed`` False when the object is still the ETag asked about;
    otherwise ``stored`` is the new state, or None when there is no object."""

    changed: bool
    stored: StoredDeployment | None = None


class DeploymentStore:
    """Reads and conditionally writes one model's :class:`DesiredDeployment` (thread-safe: boto3 clients are)."""

    def __init__(self, settings: Settings, client: S3Client | None = None) -> None:
        self.bucket = settings.s3_bucket
        self.key = state_key(settings)
        self._settings = settings
        self._client = client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = _s3_client(self._settings)
        return self._client

    def read(self) -> StoredDeployment | None:
        """The current state, or None when none was ever written."""
        return self.poll(None).stored

    def poll(self, etag: str | None) -> Poll:
        """A conditional GET: unchanged (``304``) when the object is still ``etag``; the new state otherwise."""
        from botocore.exceptions import ClientError

        extra = {"IfNoneMatch": f'"{etag}"'} if etag else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key, **extra)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code"))
            if code in {"304", "NotModified"}:
                return Poll(changed=False)
            if code in {"NoSuchKey", "404"}:
                return Poll(changed=etag is not None)
            raise
        body = response["Body"].read()
        stored = StoredDeployment(DesiredDeployment.from_json(body, self.uri), str(response["ETag"]).strip('"'))
        return Poll(changed=stored.etag != etag, stored=stored)

    def write(self, state: DesiredDeployment, expected: StoredDeployment | None) -> StoredDeployment:
        """Replace ``expected`` (None: create) with ``state``; :class:`DeploymentConflict` if it changed meanwhile.

        ``state.generation`` must be ``expected``'s plus one (1 for the first write).
        """
        from botocore.exceptions import ClientError

        from include.continuous_training.storage import PreconditionFailed, put_bytes

        wanted = expected.state.generation + 1 if expected else 1
        if state.generation != wanted:
            raise DeploymentStateError(f"generation: the write after {wanted - 1} is {wanted}, got {state.generation}")
        try:
            etag = put_bytes(
                self.client,
                self.bucket,
                self.key,
                state.to_json().encode(),
                content_type="application/json",
                only_if_absent=expected is None,
                if_match=expected.etag if expected else None,
            )
        except PreconditionFailed as error:
            raise DeploymentConflict(
                f"{self.uri}: changed by another writer since generation {wanted - 1} was read ({error})"
            ) from None
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) in {"NoSuchKey", "404"}:
                raise DeploymentConflict(f"{self.uri}: deleted since generation {wanted - 1} was read") from None
            raise
        return StoredDeployment(state, etag)

    def update(
        self, change: Callable[[DesiredDeployment | None], DesiredDeployment], attempts: int = 8
    ) -> StoredDeployment:
        """Read, apply ``change`` (current state, or None, to the next one), write conditionally; on a
        conflict read again and re-apply, up to ``attempts`` times (then :class:`DeploymentConflict`).

        ``change`` may raise to refuse (its error propagates); ``generation`` and ``updated_at`` of
        what it returns are stamped here.
        """
        for attempt in range(attempts):
            current = self.read()
            proposed = change(current.state if current else None)
            stamped = dataclasses.replace(
                proposed, generation=(current.state.generation + 1 if current else 1), updated_at=utc_now()
            )
            try:
                return self.write(stamped, current)
            except DeploymentConflict:
                if attempt == attempts - 1:
                    raise
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))  # noqa: S311  # nosec B311
        raise AssertionError("unreachable")


def _s3_client(settings: Settings) -> Any:
    """Short timeouts and few retries: a poll must not stall a worker's sync loop for minutes."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url, config=config)
