"""Human-readable, immutable dataset versions: ``transactions@v12`` for a training window,
``transactions/batch@v7`` for a curated batch.

A version is an ordered id per dataset and kind plus the content hash that already names the data
(a training window's ``data_hash``, a curated batch's ``batch_id``): the same content always gets
the same version, new content the next number. "Model v7 trained on transactions@v12" is a sentence
anyone can read, and ``transactions@v12`` leads back to the exact objects (the data manifest lists
every curated object with its ETag).

Stored in the bucket, standard library + boto3 only, under ``CT_DATASET_PREFIX<dataset>/<kind>/``:

- ``v000012.json`` — the version's record (number, hash, what it covers), written with
  ``If-None-Match: *``: of two writers taking the same number one wins, the other takes the next;
- ``by-hash/<hash>.json`` — which version a content hash got, written the same way: a second
  assembly of the same window finds it and reuses the number.

Nothing here is ever rewritten. The dataset's name is ``CT_DATASET_NAME``, by default the suite's
file name without ``.json`` / ``.suite.json`` (``transactions``, ``penguins``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from include.continuous_training.config import Settings
from include.continuous_training.storage import PreconditionFailed, put_json, safe_key_part

KINDS = {"window": "", "batch": "/batch"}  # how each kind is written after the dataset's name
MAX_RACES = 20


@dataclass(frozen=True)
class DatasetVersion:
    dataset: str
    kind: str  # "window" | "batch"
    number: int
    content_hash: str
    created_at: str
    details: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.dataset}{KINDS[self.kind]}@v{self.number}"


def dataset_name(settings: Settings) -> str:
    if settings.dataset_name:
        return settings.dataset_name
    stem = settings.expectation_suite_path.name
    for suffix in (".suite.json", ".json"):
        stem = stem.removesuffix(suffix)
    return stem or settings.model_name


def _folder(settings: Settings, kind: str) -> str:
    return f"{settings.dataset_prefix}{safe_key_part(dataset_name(settings))}/{kind}/"


def _read(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return dict(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
            return None
        raise


def _latest_number(s3: Any, bucket: str, folder: str) -> int:
    numbers = [0]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder + "v", Delimiter="/"):
        for item in page.get("Contents", []):
            name = item["Key"].removeprefix(folder).removesuffix(".json")
            if name[1:].isdigit():
                numbers.append(int(name[1:]))
    return max(numbers)


def version_for(
    s3: Any, settings: Settings, kind: str, content_hash: str, details: dict[str, Any] | None = None
) -> DatasetVersion:
    """The version of this content: the one it already has, else the next number (claimed atomically)."""
    if kind not in KINDS:
        raise ValueError(f"dataset version kind {kind!r}: expected one of {sorted(KINDS)}")
    bucket, folder = settings.s3_bucket, _folder(settings, kind)
    by_hash = f"{folder}by-hash/{safe_key_part(content_hash)}.json"
    known = _read(s3, bucket, by_hash)
    if known is not None:
        return DatasetVersion(**known)
    number = _latest_number(s3, bucket, folder)
    for _ in range(MAX_RACES):
        number += 1
        version = DatasetVersion(
            dataset=dataset_name(settings),
            kind=kind,
            number=number,
            content_hash=content_hash,
            created_at=datetime.now(UTC).isoformat(),
            details=details or {},
        )
        try:
            put_json(s3, bucket, f"{folder}v{number:06d}.json", asdict(version), only_if_absent=True)
        except PreconditionFailed:
            continue  # another writer took this number: try the next
        try:
            put_json(s3, bucket, by_hash, asdict(version), only_if_absent=True)
        except PreconditionFailed:  # the same content got a number meanwhile: that one stands
            return DatasetVersion(**(_read(s3, bucket, by_hash) or asdict(version)))
        return version
    raise RuntimeError(f"could not claim a dataset version under s3://{bucket}/{folder} in {MAX_RACES} tries")
