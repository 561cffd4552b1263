"""S3 access shared by every stage: listing, reading a known version, writing, copying.

Functions take a boto3 S3 client so the same code runs inside Airflow (client from the ``aws_ct``
connection, see :func:`s3_client_from_connection`) and outside it (:func:`s3_client`).

Writes are single ``PutObject`` calls: S3 makes an object visible only once it is complete, so no
reader ever sees a partial object. Reads of landing objects pass the ETag they were listed with
(``IfMatch``), so a file overwritten between listing and reading is never processed under the old
version's identity.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.continuous_training.config import Settings
from include.continuous_training.errors import ContinuousTrainingError, DataError

if TYPE_CHECKING:
    import pandas as pd
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

_SAFE_PART = re.compile(r"[^A-Za-z0-9._=-]+")


class PreconditionFailed(ContinuousTrainingError):
    """A conditional S3 request was refused (object exists, or it changed since it was listed)."""


class MissingObject(DataError):
    """An object another stage recorded (a split, a manifest) is not in the bucket."""


@dataclass(frozen=True)
class ObjectRef:
    """One S3 object version as listed: key, ETag (without quotes) and size in bytes."""

    key: str
    etag: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "etag": self.etag, "size": self.size}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ObjectRef:
        return cls(key=str(raw["key"]), etag=str(raw["etag"]), size=int(raw["size"]))


def s3_client(settings: Settings) -> S3Client:
    """A boto3 client for code running outside Airflow (credentials from the environment)."""
    import boto3

    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url)


def s3_client_from_connection(conn_id: str) -> S3Client:
    """A boto3 client built from an Airflow AWS connection (endpoint, region, credentials)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


def safe_key_part(value: str) -> str:
    """Make ``value`` usable as one path segment of an S3 key we build (no '/', no '..')."""
    cleaned = _SAFE_PART.sub("_", value).strip("._")
    return cleaned[:120] or "_"


def list_objects(client: S3Client, bucket: str, prefix: str) -> Iterator[ObjectRef]:
    """Every object under ``prefix`` (paginated), skipping folder placeholders."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/"):
                continue
            yield ObjectRef(key=key, etag=item["ETag"].strip('"'), size=int(item["Size"]))


def read_object(client: S3Client, bucket: str, ref: ObjectRef) -> bytes:
    """Read exactly the listed version of an object; raise :class:`PreconditionFailed` if it changed."""
    from botocore.exceptions import ClientError

    try:
        response = client.get_object(Bucket=bucket, Key=ref.key, IfMatch=f'"{ref.etag}"')
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
            raise PreconditionFailed(
                f"s3://{bucket}/{ref.key} changed since it was listed (ETag {ref.etag})"
            ) from error
        raise
    return bytes(response["Body"].read())


def put_bytes(
    client: S3Client,
    bucket: str,
    key: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    only_if_absent: bool = False,
    if_match: str | None = None,
) -> str:
    """Write one object in a single request (integrity-checked with Content-MD5); return its ETag.

    With ``only_if_absent`` the write is refused with :class:`PreconditionFailed` when the key
    exists, which makes it a claim no concurrent writer can also win; with ``if_match`` (an ETag)
    when the object is no longer that version, so of two writers replacing it only one wins.
    """
    from botocore.exceptions import ClientError

    digest = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()  # S3's Content-MD5
    extra: dict[str, Any] = {"IfNoneMatch": "*"} if only_if_absent else {}
    if if_match is not None:
        extra["IfMatch"] = if_match if if_match.startswith('"') else f'"{if_match}"'
    try:
        response = client.put_object(
            Bucket=bucket, Key=key, Body=data, ContentType=content_type, ContentMD5=digest, **extra
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
            state = "already exists" if only_if_absent else f"is no longer version {if_match}"
            raise PreconditionFailed(f"s3://{bucket}/{key} {state}") from error
        raise
    return str(response["ETag"]).strip('"')


def put_json(
    client: S3Client, bucket: str, key: str, payload: Any, only_if_absent: bool = False, if_match: str | None = None
) -> str:
    data = json.dumps(payload, indent=2, sort_keys=True, default=str).encode()
    return put_bytes(client, bucket, key, data, "application/json", only_if_absent=only_if_absent, if_match=if_match)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """A DataFrame as Parquet bytes (no index), ready for :func:`put_bytes`."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_parquet_object(
    client: S3Client, bucket: str, key: str, version_id: str | None = None
) -> tuple[pd.DataFrame, str]:
    """One GET: the Parquet object at ``key`` (that ``version_id`` when given) as a DataFrame, and the
    ETag of the version read."""
    import pandas as pd

    extra = {"VersionId": version_id} if version_id else {}
    response = client.get_object(Bucket=bucket, Key=key, **extra)
    frame = pd.read_parquet(io.BytesIO(response["Body"].read()))
    return frame, str(response["ETag"]).strip('"')


def get_json(client: S3Client, bucket: str, key: str) -> Any | None:
    """The JSON document at ``key``, or None when there is none."""
    from botocore.exceptions import ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
            return None
        raise
    return json.loads(body)


def copy_object(client: S3Client, bucket: str, source: ObjectRef, destination_key: str) -> None:
    """Server-side copy of the listed version of ``source`` (the source is left untouched)."""
    client.copy_object(
        Bucket=bucket,
        Key=destination_key,
        CopySource={"Bucket": bucket, "Key": source.key},
        CopySourceIfMatch=f'"{source.etag}"',
    )


def key_of(settings: Settings, uri: str) -> str:
    """The key of ``s3://<project bucket>/<key>``; any other URI is refused."""
    prefix = f"s3://{settings.s3_bucket}/"
    if not uri.startswith(prefix):
        raise DataError(f"{uri} is not in the project bucket {settings.s3_bucket}")
    return uri[len(prefix) :]


def read_parquet_uri(client: S3Client, settings: Settings, uri: str) -> pd.DataFrame:
    """The Parquet object at an ``s3://`` URI of the project bucket, as a DataFrame."""
    return read_parquet_object(client, settings.s3_bucket, key_of(settings, uri))[0]


def read_json_uri(client: S3Client, settings: Settings, uri: str) -> dict[str, Any]:
    """The JSON object at an ``s3://`` URI of the project bucket; :class:`MissingObject` when absent."""
    document = get_json(client, settings.s3_bucket, key_of(settings, uri))
    if document is None:
        raise MissingObject(f"{uri} is missing")
    return dict(document)
