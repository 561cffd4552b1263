"""Rebuild a registered model version from what was recorded, and say whether it came out the same.

    python -m include.continuous_training.rebuild --version 3 [--model NAME]

(and the ``rebuild_model`` DAG, Param ``version``). From the version's MLflow run:

1. the data manifest names every curated object the window was cut from, with its ETag: each is read
   at exactly that version (the current object if its ETag still matches, else the object version
   holding that ETag in a versioned bucket); one that is gone stops the rebuild with
   ``cannot rebuild: ...`` naming the object and the ETag;
2. the window and splits are cut again (same window end, same length, same fractions): the data hash
   must equal the recorded one;
3. the model is trained again with the recorded parameters (rounds, early stopping, depth, learning
   rate, overrides), seed and device (``cpu`` here unless the run recorded ``cuda`` and one is visible);
4. both models score the holdout: **identical** when the largest absolute difference is at most
   ``1e-6`` (on CPU, XGBoost ``hist`` with the same seed is deterministic), else **differs** by how much.

The verdict (and every input found or missing) is logged to the rebuild's MLflow run
(``rebuild/verdict.json``, tag ``ct.rebuild_of``) and tagged on the version (``ct.rebuild_verdict``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from include.continuous_training.config import Settings
from include.continuous_training.errors import ContinuousTrainingError

IDENTICAL_WITHIN = 1e-6


class CannotRebuild(ContinuousTrainingError):
    """A recorded input is missing (a curated object version, the manifest, a parameter)."""


@dataclass(frozen=True)
class RebuildVerdict:
    model_name: str
    version: str
    verdict: str  # "identical" | "differs"
    max_abs_diff: float
    holdout_rows: int
    data_hash_recorded: str
    data_hash_rebuilt: str
    rebuild_run_id: str
    seconds: float
    device: str
    inputs: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        same_data = "same data" if self.data_hash_recorded == self.data_hash_rebuilt else "OTHER DATA"
        return (
            f"{self.model_name} v{self.version}: {self.verdict.upper()} (max abs diff {self.max_abs_diff:.3g} on "
            f"{self.holdout_rows} holdout rows, limit {IDENTICAL_WITHIN:g}; {same_data}: "
            f"hash {self.data_hash_rebuilt}; "
            f"on {self.device} in {self.seconds:.1f}s; rebuild run {self.rebuild_run_id})"
        )


def pin_object_version(s3: Any, bucket: str, key: str, etag: str) -> str | None:
    """The version id of ``key`` whose ETag is ``etag`` (None: the current object is it); raise if none is."""
    from botocore.exceptions import ClientError

    try:
        if s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"') == etag:
            return None
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey", "NotFound"}:
            raise
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key)
        for page in pages:
            for item in page.get("Versions", []):
                if item["Key"] == key and item["ETag"].strip('"') == etag:
                    return str(item["VersionId"])
    except ClientError:
        pass
    raise CannotRebuild(
        f"cannot rebuild: curated object s3://{bucket}/{key} with ETag {etag} is gone (not the current object, "
        "and no older version holds it: is bucket versioning on?)"
    )


def rebuild_version(s3: Any, settings: Settings, version: str) -> RebuildVerdict:
    """Rebuild ``version`` of ``settings.model_name``; log and tag the verdict; return it."""
    import dataclasses

    import numpy as np

    from include.continuous_training.devices import cuda_device_count
    from include.continuous_training.features import MANIFEST_ARTIFACT, TUNABLE_PARAMS
    from include.continuous_training.registry import load_model, tracking_client
    from include.continuous_training.storage import read_parquet_uri
    from include.continuous_training.training import assemble_training_data, train_challenger

    started = time.perf_counter()
    client = tracking_client(settings)
    model_version = client.get_model_version(settings.model_name, version)
    if not model_version.run_id:
        raise CannotRebuild(f"cannot rebuild: {settings.model_name} v{version} records no MLflow run")
    run = client.get_run(model_version.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            manifest = json.loads(Path(client.download_artifacts(run.info.run_id, MANIFEST_ARTIFACT, tmp)).read_text())
        except Exception as error:
            raise CannotRebuild(f"cannot rebuild: run {run.info.run_id} has no {MANIFEST_ARTIFACT} ({error})") from None
    missing = [name for name in ("batches", "window", "data_hash", "features") if name not in manifest]
    if missing:
        raise CannotRebuild(f"cannot rebuild: the recorded manifest lacks {missing}")
    if list(manifest["features"]) != list(settings.feature_columns):
        raise CannotRebuild(
            f"cannot rebuild: v{version} was trained on features {manifest['features']}, the settings now name "
            f"{list(settings.feature_columns)} (CT_NUMERIC_COLUMNS / CT_CATEGORICAL_COLUMNS)"
        )
    pinned = [
        {**batch, "version_id": pin_object_version(s3, settings.s3_bucket, batch["curated_key"], batch["curated_etag"])}
        for batch in manifest["batches"]
    ]
    params = run.data.params
    overrides = {name: params[name] for name in TUNABLE_PARAMS if name in params}
    recorded = dataclasses.replace(settings, seed=int(params.get("seed", settings.seed)))
    window = manifest["window"]
    data = assemble_training_data(
        s3,
        recorded,
        int(window["days"]),
        datetime.fromisoformat(window["not_after"]),
        pinned=pinned,
        folder=f"{settings.reports_prefix}rebuild/{settings.model_name}/v{version}/",
    )
    device = params.get("device", "cpu")
    rebuilt = train_challenger(
        s3,
        recorded,
        data,
        dag_run_id=f"rebuild-v{version}-{data['data_hash']}",
        overrides=overrides,
        reason=f"rebuild of {settings.model_name} v{version}",
        device_probe=(lambda: (0, "rebuilding a model trained on cpu")) if device == "cpu" else cuda_device_count,
    )
    holdout = read_parquet_uri(s3, settings, data["holdout_uri"])
    original = load_model(f"models:/{settings.model_name}/{version}")
    again = load_model(rebuilt["model_uri"])
    first = original.spec.predict(original.booster, original.spec.matrix(holdout))
    second = again.spec.predict(again.booster, again.spec.matrix(holdout))
    diff = float(np.max(np.abs(first - second))) if len(holdout) else 0.0
    verdict = RebuildVerdict(
        model_name=settings.model_name,
        version=str(version),
        verdict="identical" if diff <= IDENTICAL_WITHIN else "differs",
        max_abs_diff=diff,
        holdout_rows=len(holdout),
        data_hash_recorded=str(manifest["data_hash"]),
        data_hash_rebuilt=data["data_hash"],
        rebuild_run_id=rebuilt["run_id"],
        seconds=time.perf_counter() - started,
        device=str(rebuilt.get("device") or device),
        inputs={
            "objects": [{k: b[k] for k in ("curated_key", "curated_etag", "version_id")} for b in pinned],
            "params": overrides,
            "seed": recorded.seed,
        },
    )
    client.set_tag(rebuilt["run_id"], "ct.rebuild_of", f"{settings.model_name}/{version}")
    client.set_tag(rebuilt["run_id"], "ct.role", "rebuild")
    client.log_dict(rebuilt["run_id"], asdict(verdict), "rebuild/verdict.json")
    client.set_model_version_tag(settings.model_name, version, "ct.rebuild_verdict", verdict.summary()[:5000])
    return verdict


def main(argv: list[str] | None = None) -> int:
    from include.continuous_training.config import SettingsError, load_settings
    from include.continuous_training.storage import s3_client

    parser = argparse.ArgumentParser(prog="python -m include.continuous_training.rebuild", description=__doc__)
    parser.add_argument("--version", required=True, help="the registered model version to rebuild")
    parser.add_argument("--model", help="a model file's name (default: CT_MODEL, else the environment's settings)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(model=args.model)
        verdict = rebuild_version(s3_client(settings), settings, args.version)
    except (CannotRebuild, SettingsError) as error:
        print(str(error), file=sys.stderr)
        return 1
    print(verdict.summary())
    return 0 if verdict.verdict == "identical" else 1


if __name__ == "__main__":
    raise SystemExit(main())
